"""The machine's own PostgreSQL, shared by tests/conftest.py and the tests that need it directly.

Test modules import these from here, not from ``conftest``: a second conftest.py (the one
of tests/distributed) makes ``import conftest`` name whichever was collected last.
"""

from __future__ import annotations

PF_SOURCE_DB = "bascule_pf_source"
PF_TARGET_DB = "bascule_pf_target"
PF_APP_ROLE = "pf_app"


def admin_connection():
    """The machine's own PostgreSQL (trust auth on 127.0.0.1:5432, wal_level=replica), in autocommit."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn
