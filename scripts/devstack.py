"""Local stand-ins for the two clouds, and the Airflow connections that reach them.

- Azurite stands in for Azure Blob Storage, moto server for Scaleway Object Storage, and
  (with ``Ports.ssec``) a proxy in front of moto answers SSE-C requests like Scaleway
  (scripts/ssec_standin.py: HEAD without the key on an SSE-C object is a 400); the S3
  connection then goes through it.
- Both bind to 127.0.0.1 only, keep their data under a project-local state folder,
  are waited for until they answer, and are stopped by the PID they were started with.
- ``local_connections()`` is the one place the stand-ins' Airflow connections are
  defined; the demo writes them to an env file and the tests put them in os.environ.

Usage: python scripts/devstack.py up|down|status|env [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = ROOT / ".bascule"
VENV_BIN = Path(sys.executable).parent

# The well-known Azurite development account: public, documented, local only.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_ACCESS_KEY = "bascule-local"
S3_SECRET_KEY = "bascule-local-secret"
TARGET_REGION = "fr-par"
# The demo's SSE-C key: derived from a public phrase, so as public as the Azurite key. Local only.
LOCAL_SSE_C_KEY = base64.b64encode(hashlib.sha256(b"bascule local development SSE-C key").digest()).decode()

DEMO_PORTS = {"azurite": 10000, "moto": 9090, "ssec": 9091}


@dataclass(frozen=True)
class Ports:
    azurite: int
    moto: int
    ssec: int = 0  # the SSE-C stand-in in front of moto; 0: none, the S3 connection goes to moto


def azurite_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"


def local_connections(ports: Ports, *, azure_key: str = AZURITE_KEY) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables (JSON form) for the stand-ins, and the deployment marker."""
    azure = {
        "conn_type": "wasb",
        "login": AZURITE_ACCOUNT,
        "password": azure_key,
        "host": azurite_url(ports.azurite),
    }
    s3 = {
        "conn_type": "aws",
        "login": S3_ACCESS_KEY,
        "password": S3_SECRET_KEY,
        "extra": {
            "endpoint_url": f"http://127.0.0.1:{ports.ssec or ports.moto}",
            "region_name": TARGET_REGION,
            # boto3 >= 1.36 adds CRC32 to every upload; not every S3-compatible store accepts it.
            "config_kwargs": {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
        },
    }
    return {
        "AIRFLOW_CONN_HDH_AZURE_BLOB": json.dumps(azure),
        "AIRFLOW_CONN_HDH_SCALEWAY_S3": json.dumps(s3),
        # The workloads' SSE-C key (target.encryption.key_conn_id): base64 of 32 bytes in the password.
        "AIRFLOW_CONN_HDH_SCALEWAY_SSE_C": json.dumps({"conn_type": "generic", "password": LOCAL_SSE_C_KEY}),
        # The stand-ins speak plain HTTP on loopback: the policy allows that only in a deployment
        # declared local development, and the evidence says so. Production leaves it unset.
        "AIRFLOW_VAR_BASCULE_DEPLOYMENT": "local-development",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float, name: str, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise RuntimeError(f"{name} exited before listening on port {port}; see its log in the state folder")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def spawn_background(
    name: str, argv: list[str], state_dir: Path, env: dict[str, str] | None = None, *, inherit: bool = True
) -> int:
    """Start ``argv`` in its own session, logging to ``<state>/<name>.log``; record its PID.

    ``inherit=False``: ``env`` is the whole environment (a caller that must leave a variable out).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stopping it takes its children too
            env={**os.environ, **(env or {})} if inherit else (env or {}),
            cwd=ROOT,
        )
    _pid_file(state_dir, name).write_text(str(process.pid))
    return process.pid


def _spawn(name: str, argv: list[str], state_dir: Path, port: int, env: dict[str, str] | None = None) -> int:
    if _port_busy(port):
        raise RuntimeError(
            f"port {port} for {name} is already in use; stop what holds it "
            f"(`make down`, or `ss -ltnp 'sport = :{port}'`) and retry"
        )
    pid = spawn_background(name, argv, state_dir, env)
    try:
        wait_for_port(port, timeout=30, name=name, pid=pid)
    except Exception:
        stop_process(state_dir, name)
        raise
    return pid


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_azurite(state_dir: Path, port: int) -> int:
    binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `npm ci` in {ROOT} (make does it for you)")
    data = state_dir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(data),
        "--silent",
        # The Python SDK sends a newer API version than Azurite 3.35 declares.
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ]  # fmt: skip
    return _spawn("azurite", argv, state_dir, port)


def start_moto(state_dir: Path, port: int) -> int:
    spool = state_dir / "moto-tmp"
    spool.mkdir(parents=True, exist_ok=True)
    argv = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    # moto spools large objects to TMPDIR: keep them inside the state folder.
    return _spawn("moto", argv, state_dir, port, env={"TMPDIR": str(spool)})


def start_ssec(state_dir: Path, port: int, upstream: int) -> int:
    argv = [sys.executable, str(ROOT / "scripts" / "ssec_standin.py"), "--port", str(port), "--upstream-port", str(upstream)]
    return _spawn("ssec", argv, state_dir, port)


def stop_process(state_dir: Path, name: str, *, grace: float = 10.0) -> bool:
    """Stop a process group started by this module. Returns True if something was running."""
    pid_file = _pid_file(state_dir, name)
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink(missing_ok=True)
    if pid <= 0 or not alive(pid):
        return False
    # Airflow runs task processes in process groups of their own: take the whole tree.
    tree = _descendants(pid)
    for sig, wait in ((signal.SIGINT, grace / 2), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
        tree |= _descendants(pid)
        _signal_all(pid, tree, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _any_alive(pid, tree):
            time.sleep(0.1)
        if not _any_alive(pid, tree):
            break
    _reap(pid)
    return True


def _signal_all(pgid: int, pids: set[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _any_alive(pgid: int, pids: set[int]) -> bool:
    return _group_alive(pgid) or any(alive(pid) for pid in pids)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it only waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A group whose only members are zombies of ours is as good as gone.
    return any(
        not _is_zombie(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(int(p.name)) == pgid
    )


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


SERVICES = ("azurite", "moto", "ssec")


def up(state_dir: Path, ports: Ports) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    started = []
    try:
        if not is_running(state_dir, "azurite"):
            start_azurite(state_dir, ports.azurite)
            started.append("azurite")
        if not is_running(state_dir, "moto"):
            start_moto(state_dir, ports.moto)
            started.append("moto")
        if ports.ssec and not is_running(state_dir, "ssec"):
            start_ssec(state_dir, ports.ssec, ports.moto)
            started.append("ssec")
    except Exception:
        for name in started:
            stop_process(state_dir, name)
        raise


def down(state_dir: Path, names: tuple[str, ...] = SERVICES) -> list[str]:
    return [name for name in names if stop_process(state_dir, name)]


def is_running(state_dir: Path, name: str) -> bool:
    pid_file = _pid_file(state_dir, name)
    return pid_file.exists() and alive(int(pid_file.read_text().strip() or 0))


def write_env_file(path: Path, ports: Ports) -> None:
    lines = [f"{key}='{value}'" for key, value in local_connections(ports).items()]
    path.write_text(
        "# Generated by scripts/devstack.py: Airflow connections to the local stand-ins.\n" + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env", "clean"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--azurite-port", type=int, default=DEMO_PORTS["azurite"])
    parser.add_argument("--moto-port", type=int, default=DEMO_PORTS["moto"])
    parser.add_argument("--ssec-port", type=int, default=DEMO_PORTS["ssec"], help="0: no SSE-C stand-in")
    args = parser.parse_args(argv)
    ports = Ports(args.azurite_port, args.moto_port, args.ssec_port)
    state_dir: Path = args.state_dir
    if args.command == "up":
        up(state_dir, ports)
        write_env_file(state_dir / "connections.env", ports)
        print(f"azurite: {azurite_url(ports.azurite)}  moto (S3): http://127.0.0.1:{ports.moto}")
    elif args.command == "down":
        stopped = down(state_dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.command == "status":
        for name in SERVICES:
            print(f"{name}: {'running' if is_running(state_dir, name) else 'stopped'}")
    elif args.command == "env":
        for key, value in local_connections(ports).items():
            print(f"export {key}='{value}'")
    elif args.command == "clean":
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
