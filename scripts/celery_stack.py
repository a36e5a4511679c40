"""A distributed Airflow on this machine: CeleryExecutor on Redis, metadata in PostgreSQL,
FAB auth manager with the project's roles, and two Celery workers.

``up`` starts, each as its own process group: the API server, scheduler, DAG processor,
triggerer and two Celery workers (own ``-H`` hostnames, low ``--concurrency``, no log
servers: they share one log folder the API server reads), plus the demo's stand-ins
(Azurite, moto, two throwaway PostgreSQL clusters) and the demo's connections. The
metadata database is a database of its own on the machine's PostgreSQL, created if
missing and dropped by ``down``; the broker is one Redis db number.

Secrets (Fernet key, API secret, JWT secret, user passwords) are generated once into an
uncommitted ``.env`` (mode 0600) and reused. Nothing secret is passed on a command line.

Usage: python scripts/celery_stack.py up|down|status|env [--state-dir DIR] [--api-port N] ...
(``env`` only writes the ``.env``, for docker-compose.yaml.)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import devstack
import pgclusters
from airflow_stack import Api, api_healthy

ROOT = devstack.ROOT
DEFAULT_STATE_DIR = ROOT / ".bascule" / "celery"
DEFAULT_ENV_FILE = ROOT / ".env"
ROLES_FILE = ROOT / "deploy" / "fab-roles.json"
AIRFLOW_BIN = str(devstack.VENV_BIN / "airflow")

# Who logs in, with which role. approver3 holds the Approver role but is named in no
# manifest: the gate must refuse them (tests/distributed/test_roles.py).
USERS = {
    "admin": "Admin",
    "operator": "Operator",
    "approver1": "Approver",
    "approver2": "Approver",
    "approver3": "Approver",
    "viewer": "Viewer",
}
WORKERS = ("worker1", "worker2")
CORE = ("api-server", "scheduler", "dag-processor", "triggerer")
# Started while the roles and users are created: they never touch FAB's tables. The API
# server and the DAG processor do (role sync at start, DAG permissions when parsing), so they
# start after it rather than race it for the same rows.
STARTED_BEFORE_ROLES = ("scheduler", "triggerer")
SECRET_KEYS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")

# The settings that make this deployment what it is; docker-compose.yaml must say the same
# (tests/test_docker_compose.py compares them), so they are written once, here.
SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": "bascule_airflow.fab_identity.BasculeFabAuthManager",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "bascule_airflow.worker_identity.hostname",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": "8",
    # A killed worker's task is failed after this many seconds without a heartbeat and then
    # retried (the DAG's retries: 2, from 30 s backoff). 300 s by default; 30 s keeps a lost
    # worker's shard from waiting five minutes and is far above a live task's heartbeat (5 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    # How often the scheduler looks for such task instances (default 10 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
}


@dataclass
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    env_file: Path = DEFAULT_ENV_FILE
    api_port: int = 8091
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    db_name: str = "bascule_celery"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 3
    concurrency: int = 2
    azurite_port: int = 0
    moto_port: int = 0
    ssec_port: int = 0  # the SSE-C stand-in in front of moto: the workloads' target connection goes through it
    pg_pair_ports: tuple[int, int] = (0, 0)
    workloads_dir: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def resolved(self) -> StackConfig:
        """Free ports for whatever was left at 0."""
        if not self.azurite_port:
            self.azurite_port = devstack.free_port()
        if not self.moto_port:
            self.moto_port = devstack.free_port()
        if not self.ssec_port:
            self.ssec_port = devstack.free_port()
        if not all(self.pg_pair_ports):
            self.pg_pair_ports = (devstack.free_port(), devstack.free_port())
        return self


class StackError(RuntimeError):
    """What failed at start, and what to do about it."""


# -- secrets -------------------------------------------------------------------------------


def ensure_env_file(path: Path) -> dict[str, str]:
    """Read ``path`` (KEY=value lines); generate what is missing; write it back with mode 0600."""
    values = read_env_file(path)
    generated = {
        "AIRFLOW__CORE__FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__API__SECRET_KEY": lambda: secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": lambda: secrets.token_urlsafe(32),
        "REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
        # docker-compose.yaml's metadata database, MinIO and PostgreSQL stand-ins.
        "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
        "MINIO_ROOT_PASSWORD": lambda: secrets.token_urlsafe(24),
        "PG_SOURCE_PASSWORD": lambda: secrets.token_urlsafe(24),
        "PG_TARGET_PASSWORD": lambda: secrets.token_urlsafe(24),
        **{f"BASCULE_{user.upper()}_PASSWORD": (lambda: secrets.token_urlsafe(18)) for user in USERS},
    }
    missing = {key: make() for key, make in generated.items() if not values.get(key)}
    if missing or not path.exists():
        values.update(missing)
        lines = ["# Generated by scripts/celery_stack.py: secrets of the local distributed stack. Never commit."]
        lines += [f"{key}={value}" for key, value in values.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: the secrets are never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return values


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


# -- the stack -----------------------------------------------------------------------------


class CeleryStack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.home = config.state_dir / "airflow"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    def metadata_url(self, driver: str = "postgresql+psycopg2") -> str:
        c = self.config
        return f"{driver}://{c.pg_user}@{c.pg_host}:{c.pg_port}/{c.db_name}"

    def broker_url(self) -> str:
        c = self.config
        return f"redis://{c.redis_host}:{c.redis_port}/{c.redis_db}"

    def connections(self) -> dict[str, str]:
        c = self.config
        ports = devstack.Ports(c.azurite_port, c.moto_port, c.ssec_port)
        conns = devstack.local_connections(ports)
        # The deployment is a Variable set once in the database (up), not an environment
        # variable anyone could change (docs/security.md).
        conns.pop("AIRFLOW_VAR_BASCULE_DEPLOYMENT", None)
        source, target = self.pg_pair()
        return {**conns, **pgclusters.airflow_connections(source, target)}

    def pg_pair(self) -> tuple[pgclusters.PgCluster, pgclusters.PgCluster]:
        state, (source_port, target_port) = self.config.state_dir, self.config.pg_pair_ports
        return (
            pgclusters.PgCluster("azure-pg", state / "pg-source", source_port),
            pgclusters.PgCluster("scaleway-pg", state / "pg-target", target_port),
        )

    def env(self, worker: str | None = None) -> dict[str, str]:
        secrets_env = ensure_env_file(self.config.env_file)
        inherited = {k: v for k, v in os.environ.items() if k != "AIRFLOW_VAR_BASCULE_DEPLOYMENT"}
        env = {
            **inherited,
            "PATH": f"{devstack.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # Processes import this checkout's code, whichever checkout runs the script.
            "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in ("include", "plugins", "scripts")),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            **SETTINGS,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.config.concurrency),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url(),
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.metadata_url("postgresql"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.config.api_port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # One log folder for all: the API server reads the workers' task logs from it.
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            **{key: secrets_env[key] for key in SECRET_KEYS},
            **self.connections(),
            **self.config.extra_env,
        }
        if self.config.workloads_dir:
            env["BASCULE_WORKLOADS_DIR"] = self.config.workloads_dir
        if worker:
            env["BASCULE_WORKER_HOSTNAME"] = worker
        return env

    def airflow(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [AIRFLOW_BIN, *args], env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if result.returncode != 0:
            raise StackError(f"`airflow {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    # -- start ---------------------------------------------------------------------------

    def check_services(self) -> None:
        """Before anything starts: the broker and the metadata server must answer."""
        import psycopg2
        import redis

        c = self.config
        try:
            redis.Redis(host=c.redis_host, port=c.redis_port, db=c.redis_db, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise StackError(
                f"the Celery broker (Redis at {c.redis_host}:{c.redis_port}, db {c.redis_db}) is unreachable: {str(exc).rstrip('.')}. "
                "Start Redis or pass --redis-port; nothing was started."
            ) from None
        try:
            psycopg2.connect(
                host=c.pg_host, port=c.pg_port, user=c.pg_user, dbname="postgres", connect_timeout=3
            ).close()
        except psycopg2.Error as exc:
            raise StackError(
                f"the metadata database server (PostgreSQL at {c.pg_host}:{c.pg_port}, user {c.pg_user}) is "
                f"unreachable: {' '.join(str(exc).split())}. Start PostgreSQL or pass --pg-port; nothing was started."
            ) from None

    def _admin(self) -> Any:
        import psycopg2

        c = self.config
        conn = psycopg2.connect(host=c.pg_host, port=c.pg_port, user=c.pg_user, dbname="postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self) -> None:
        with closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (self.config.db_name,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{self.config.db_name}"')

    def drop_database(self) -> None:
        import psycopg2

        try:
            with closing(self._admin()) as conn, conn.cursor() as cur:
                cur.execute(f'drop database if exists "{self.config.db_name}" with (force)')
        except psycopg2.Error as exc:
            print(f"could not drop metadata database {self.config.db_name}: {exc}", file=sys.stderr)

    def start(self, timeout: float = 240) -> None:
        self.check_services()
        c = self.config
        c.state_dir.mkdir(parents=True, exist_ok=True)
        (c.state_dir / "stack.json").write_text(json.dumps(asdict(c), default=str, indent=1))
        try:
            devstack.up(c.state_dir, devstack.Ports(c.azurite_port, c.moto_port, c.ssec_port))
            for cluster in self.pg_pair():
                cluster.create()
                cluster.start()
            self.create_database()
            self.airflow("db", "migrate")
            # What can start at once does (the start is paid by every test session).
            for name in STARTED_BEFORE_ROLES:
                self._spawn(name)
            for worker in WORKERS:
                self.start_worker(worker)
            with ThreadPoolExecutor(2) as pool:
                # This stack only ever talks to the local stand-ins (plain HTTP): it declares local
                # development the one way the policy accepts, a Variable in the database.
                steps = [
                    pool.submit(self.airflow, "variables", "set", "bascule_deployment", "local-development"),
                    pool.submit(self.create_roles_and_users),
                ]
                for step in steps:
                    step.result()  # the first failure, as a StackError
            for name in CORE:
                if name not in STARTED_BEFORE_ROLES:
                    self._spawn(name)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self, name: str) -> int:
        return self.start_worker(name) if name in WORKERS else self._spawn(name)

    def _spawn(self, name: str) -> int:
        argv = {
            "api-server": [AIRFLOW_BIN, "api-server", "--host", "127.0.0.1", "--port", str(self.config.api_port)],
            "scheduler": [AIRFLOW_BIN, "scheduler"],
            "dag-processor": [AIRFLOW_BIN, "dag-processor"],
            "triggerer": [AIRFLOW_BIN, "triggerer", "--skip-serve-logs"],
        }[name]
        return devstack.spawn_background(name, argv, self.config.state_dir, env=self.env(), inherit=False)

    def start_worker(self, worker: str) -> int:
        argv = [
            AIRFLOW_BIN, "celery", "worker",
            "--celery-hostname", f"{worker}@bascule",
            "--concurrency", str(self.config.concurrency),
            # Two workers on one host would both bind 8793; they share the log folder instead.
            "--skip-serve-logs",
        ]  # fmt: skip
        return devstack.spawn_background(worker, argv, self.config.state_dir, env=self.env(worker), inherit=False)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            for name in (*CORE, *WORKERS):
                if not devstack.is_running(self.config.state_dir, name):
                    raise StackError(f"{name} exited at start; see {self.config.state_dir / (name + '.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"Airflow not healthy after {timeout:.0f} s; see the logs in {self.config.state_dir}")
            time.sleep(2)

    def healthy(self) -> bool:
        return api_healthy(self.url, ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    def create_roles_and_users(self) -> None:
        """The project's roles (deploy/fab-roles.json) and one user per entry of USERS, in one process."""
        result = subprocess.run(
            [sys.executable, __file__, "_fab-init", "--env-file", str(self.config.env_file)],
            env=self.env(), timeout=300, cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"creating the FAB roles and users failed:\n{result.stderr[-2000:]}")

    # -- stop ----------------------------------------------------------------------------

    def stop(self, *, drop: bool = True) -> list[str]:
        """Every process tree at once (each may take its grace period), then the stand-ins and clusters."""
        state = self.config.state_dir
        stopped = []
        for names in ((*WORKERS, *CORE), devstack.SERVICES):
            with ThreadPoolExecutor(len(names)) as pool:
                ran = list(pool.map(lambda name: devstack.stop_process(state, name), names))
            stopped += [name for name, was_running in zip(names, ran, strict=True) if was_running]
        clusters = self.pg_pair()
        stopped += [cluster.name for cluster in clusters if (cluster.data_dir / "postmaster.pid").exists()]
        with ThreadPoolExecutor(len(clusters)) as pool:
            list(pool.map(lambda cluster: cluster.destroy() if drop else cluster.stop(), clusters))
        if drop:
            # The stand-ins' data goes with the metadata: a new stack starts from nothing.
            for leftover in ("azurite", "moto-tmp"):
                shutil.rmtree(self.config.state_dir / leftover, ignore_errors=True)
            self.drop_database()
            self.flush_broker()
        return stopped

    def flush_broker(self) -> None:
        import redis

        c = self.config
        try:
            redis.Redis(host=c.redis_host, port=c.redis_port, db=c.redis_db, socket_connect_timeout=3).flushdb()
        except redis.RedisError:
            pass

    def kill(self, name: str) -> list[int]:
        """``kill -9`` a component's whole process tree (a worker's task processes too), as a crash would."""
        pid = int((self.config.state_dir / f"{name}.pid").read_text())
        tree = [pid, *devstack._descendants(pid)]
        for member in tree:
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return tree

    def api(self, user: str) -> Api:
        password = read_env_file(self.config.env_file)[f"BASCULE_{user.upper()}_PASSWORD"]
        return Api(self.url, user, password)

    def status(self) -> dict[str, bool]:
        return {name: devstack.is_running(self.config.state_dir, name) for name in (*CORE, *WORKERS)}


def fab_init(env_file: Path) -> None:
    """Runs inside the stack's environment: create the roles and the users (idempotent)."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    roles = json.loads(ROLES_FILE.read_text())
    passwords = read_env_file(env_file)
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()
        for role_name, grants in roles.items():
            role = sm.find_role(role_name) or sm.add_role(role_name)
            for resource, actions in grants.items():
                for action in actions:
                    sm.add_permission_to_role(role, sm.create_permission(action, resource))
        for user, role_name in USERS.items():
            if sm.find_user(username=user) is None:
                sm.add_user(
                    user, user, "Bascule", f"{user}@bascule.invalid", sm.find_role(role_name),
                    passwords[f"BASCULE_{user.upper()}_PASSWORD"],
                )  # fmt: skip


def who_ran_what(api: Api, dag_id: str, run_id: str) -> list[dict]:
    """Each task instance of the run with the worker (its recorded hostname) that ran it; printed."""
    answer = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=500")
    rows = sorted(answer["task_instances"], key=lambda ti: (ti.get("start_date") or "", ti["map_index"]))
    print(f"\n{dag_id} {run_id}: which worker ran what")
    for ti in rows:
        name = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        seconds = f"{ti['duration']:6.1f} s" if ti.get("duration") else "       -"
        print(f"  {name:<30} try {ti['try_number']}  {ti['state'] or '-':<15} {seconds}  {ti.get('hostname') or '-'}")
    return rows


def start_or_explain(stack: CeleryStack, who: str) -> bool:
    """Start the stack; on a start failure print what failed (and that nothing is left running)."""
    try:
        stack.start()
    except StackError as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return False
    return True


# -- command line --------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> StackConfig:
    saved = args.state_dir / "stack.json"
    if args.command != "up" and saved.exists():
        data = json.loads(saved.read_text())
        data["state_dir"], data["env_file"] = Path(data["state_dir"]), Path(data["env_file"])
        data["pg_pair_ports"] = tuple(data["pg_pair_ports"])
        return StackConfig(**data)
    return StackConfig(
        state_dir=args.state_dir, env_file=args.env_file, api_port=args.api_port, pg_port=args.pg_port,
        db_name=args.db_name, redis_port=args.redis_port, redis_db=args.redis_db,
    ).resolved()  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env", "_fab-init"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    parser.add_argument("--api-port", type=int, default=8091)
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--db-name", default="bascule_celery")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--redis-db", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "_fab-init":
        fab_init(args.env_file)
        return 0
    if args.command == "env":
        ensure_env_file(args.env_file)
        print(f"secrets in {args.env_file} (mode 0600; never commit it)")
        return 0
    stack = CeleryStack(config_from_args(args))
    if args.command == "up":
        if not start_or_explain(stack, "celery stack"):
            return 2
        print(f"Airflow (CeleryExecutor, 2 workers) at {stack.url}; logins in {stack.config.env_file}")
    elif args.command == "down":
        stopped = stack.stop()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        for name, running in stack.status().items():
            print(f"{name}: {'running' if running else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
