"""Object-store workloads (Azure Blob -> Scaleway S3): inventory, part planning, the verified copier, freeze, parity, and the phases."""
