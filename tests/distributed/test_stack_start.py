"""The stack script refuses to start half a stack, and keeps its secrets to itself."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

import devstack
from celery_stack import SECRET_KEYS, USERS, ensure_env_file

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "celery_stack.py"


@pytest.mark.parametrize(
    ("flag", "named"),
    [("--redis-port", "the Celery broker (Redis at 127.0.0.1:{port}"),
     ("--pg-port", "the metadata database server (PostgreSQL at 127.0.0.1:{port}")],
)  # fmt: skip
def test_an_unreachable_broker_or_metadata_server_is_named_and_nothing_starts(tmp_path, flag, named) -> None:
    port = devstack.free_port()  # nothing listens there
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "up", "--state-dir", str(state), "--env-file", str(tmp_path / ".env"),
         "--api-port", str(devstack.free_port()), "--db-name", "bascule_never_created", flag, str(port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert named.format(port=port) in result.stderr and "nothing was started" in result.stderr, result.stderr
    assert not state.exists() or not list(state.glob("*.pid")), "no process may be left running"


def test_the_env_file_is_private_generated_once_and_reused(tmp_path) -> None:
    path = tmp_path / ".env"
    first = ensure_env_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for key in (*SECRET_KEYS, *(f"BASCULE_{user.upper()}_PASSWORD" for user in USERS)):
        assert len(first[key]) >= 24, key
    assert ensure_env_file(path) == first, "a second start keeps the secrets (Fernet key!) it generated"
