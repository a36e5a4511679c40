"""PostgreSQL workloads (Azure PostgreSQL -> Scaleway Managed PostgreSQL): catalog, copy, logical replication, table diff, and the phases."""
