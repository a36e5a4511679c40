"""Throwaway PostgreSQL clusters that stand in for Azure Database for PostgreSQL and
Scaleway Managed PostgreSQL: one ``initdb`` each, on a free loopback port, with
``wal_level=logical``; started and stopped by PID.

Host connections need a password (scram-sha-256), as on the managed services, so a
wrong password fails the way it would in production. Each cluster's superuser
password is generated at creation and kept in its directory (mode 0600).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import devstack

SUPERUSER = "postgres"

# Enough slots and workers for a subscription per workload plus test leftovers.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_logical_replication_workers": "8",
    "max_worker_processes": "16",
    # Throwaway clusters: durability is not what they stand in for, and fsync doubles test time.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}


def _bin_dir() -> Path:
    """The server binaries: ``pg_config --bindir`` (Debian keeps them off PATH), else PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        if (found / "initdb").exists():
            return found
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("initdb not found: install the PostgreSQL server (Debian: apt-get install postgresql)")
    return Path(initdb).resolve().parent


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root; run its binaries as the ``postgres`` OS user then."""
    return ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []


def _let_server_user_traverse(directory: Path) -> None:
    """The server runs as ``postgres``; a private temp dir (0700) on the way would lock it out."""
    for path in [directory.resolve(), *directory.resolve().parents]:
        mode = path.stat().st_mode
        if not mode & 0o001:
            path.chmod(mode | 0o001)


@dataclass(frozen=True)
class PgCluster:
    name: str
    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    @property
    def password(self) -> str:
        return (self.directory / "superuser.password").read_text().strip()

    def dsn(self, database: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={database} user={user} "
            f"password={self.password if password is None else password} connect_timeout=5"
        )

    def connect(self, database: str = "postgres", *, autocommit: bool = True):
        import psycopg2

        conn = psycopg2.connect(self.dsn(database))
        conn.autocommit = autocommit
        return conn

    def airflow_connection(self, database: str = "postgres", *, password: str | None = None) -> str:
        """The ``AIRFLOW_CONN_*`` JSON for this cluster."""
        import json

        return json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": self.port,
                "login": SUPERUSER,
                "password": self.password if password is None else password,
                "schema": database,
            }
        )

    # -- lifecycle -------------------------------------------------------------------

    def create(self, *, tls: bool = False) -> None:
        """``initdb`` a fresh cluster (the directory is wiped first).

        ``tls=True`` turns on ``ssl`` with a self-signed certificate for 127.0.0.1
        (``server.crt`` in the data directory, also usable as ``sslrootcert``), as the
        managed services offer TLS; plain connections are still accepted, so a test
        can tell a TLS session from a plain one on the same server.
        """
        if self.directory.exists():
            self.stop()
            shutil.rmtree(self.directory)
        self.socket_dir.mkdir(parents=True)
        password_file = self.directory / "superuser.password"
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            _let_server_user_traverse(self.directory.parent)
            server_user = pwd.getpwnam(SUPERUSER)
            for path in (self.directory, self.socket_dir, password_file):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        result = subprocess.run(
            [
                *_as_server_user(),
                str(_bin_dir() / "initdb"),
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb {self.data_dir} failed:\n{result.stderr[-2000:]}")
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            for key, value in {**SERVER_SETTINGS, "port": str(self.port)}.items():
                conf.write(f"{key} = '{value}'\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
        if tls:
            self._make_self_signed_certificate()
            with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
                conf.write("ssl = 'on'\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")

    def _make_self_signed_certificate(self) -> None:
        cert, key = self.data_dir / "server.crt", self.data_dir / "server.key"
        result = subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(key), "-out", str(cert),
                "-days", "7", "-subj", f"/CN={self.name}",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"openssl could not make a certificate for '{self.name}':\n{result.stderr[-2000:]}")
        # The server refuses a key file others can read, and runs as the postgres OS user.
        key.chmod(0o600)
        if os.geteuid() == 0:
            server_user = pwd.getpwnam(SUPERUSER)
            for path in (cert, key):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)

    def start(self, timeout: float = 30.0) -> None:
        result = subprocess.run(
            [
                *_as_server_user(),
                str(_bin_dir() / "pg_ctl"),
                "-D", str(self.data_dir),
                "-l", str(self.directory / "server.log"),
                "-w", "-t", str(int(timeout)),
                "start",
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            log = (
                (self.directory / "server.log").read_text()[-2000:] if (self.directory / "server.log").exists() else ""
            )
            raise RuntimeError(f"PostgreSQL '{self.name}' did not start on port {self.port}:\n{result.stderr}\n{log}")

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and devstack.alive(pid)

    def stop(self, grace: float = 15.0) -> None:
        """Fast shutdown by PID (SIGINT), then SIGQUIT if it lingers."""
        pid = self.pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGQUIT, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.running():
                    return
                time.sleep(0.1)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pair(state_dir: Path, source_port: int, target_port: int) -> tuple[PgCluster, PgCluster]:
    """A fresh source ("Azure") and target ("Scaleway") cluster, both running."""
    source = PgCluster("azure-pg", state_dir / "pg-source", source_port)
    target = PgCluster("scaleway-pg", state_dir / "pg-target", target_port)
    for cluster in (source, target):
        cluster.create()
        cluster.start()
    return source, target


def stop_pair(state_dir: Path) -> None:
    for name in ("pg-source", "pg-target"):
        directory = state_dir / name
        if (directory / "data").exists():
            PgCluster(name, directory, 0).stop()


def airflow_connections(source: PgCluster, target: PgCluster) -> dict[str, str]:
    """The demo's and tests' PostgreSQL connections, as ``AIRFLOW_CONN_*`` variables."""
    return {
        "AIRFLOW_CONN_HDH_AZURE_PG": source.airflow_connection(),
        "AIRFLOW_CONN_HDH_SCALEWAY_PG": target.airflow_connection(),
    }
