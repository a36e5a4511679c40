"""upload_to_azure against a real Azurite, started and stopped by this module."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bascule.synthetic import SMALL, generate, upload_to_azure

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# The public, well-known Azurite development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite-blob exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"azurite-blob not listening on 127.0.0.1:{port} after {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not AZURITE_BLOB.exists():
        pytest.skip(f"{AZURITE_BLOB} not installed (npm ci)")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE_BLOB),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        _stop(proc)


def test_upload_small_dataset(azurite_url: str) -> None:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        account_url=azurite_url,
        credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
    )
    container = service.get_container_client("synthetic-small")
    expected = {o.key: o for o in generate(SMALL)}

    summary = upload_to_azure(container, generate(SMALL))
    assert summary.count == len(expected) == SMALL.object_count
    assert summary.bytes == sum(len(o.body) for o in expected.values())

    blobs = {b.name: b for b in container.list_blobs(include=["metadata"])}
    assert set(blobs) == set(expected)
    for key, obj in expected.items():
        blob = blobs[key]
        assert blob.size == len(obj.body)
        assert blob.content_settings.content_md5 is not None
        assert bytes(blob.content_settings.content_md5) == hashlib.md5(obj.body).digest()
        assert blob.content_settings.content_type == "text/csv; charset=utf-8"
        assert blob.metadata == obj.metadata

    first = next(iter(expected.values()))
    assert container.download_blob(first.key).readall() == first.body

    # Idempotent: a second run overwrites in place (existing container, same blobs).
    again = upload_to_azure(container, generate(SMALL), max_workers=1)
    assert again == summary
    assert sum(1 for _ in container.list_blobs()) == len(expected)
