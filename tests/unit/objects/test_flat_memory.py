"""Inventory, delta and parity stay flat in memory over 1,000,000 listed objects (no server: fakes that stream).

Each phase runs in its own subprocess, so that its peak RSS (``VmHWM``) is its
own; growth is measured from the RSS once imports are done. The fakes generate
listings lazily, as the SDKs' pagers do, so any growth is the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

OBJECTS = 1_000_000
LIMIT_MIB = 256

SCRIPT = textwrap.dedent(
    """
    import contextlib, json, resource, shutil, sys, tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from bascule.objects.compare import compare, iter_delta
    from bascule.objects.inventory import read_inventory, write_inventory
    from bascule.objects.merge_join import azure_order
    from bascule.objects.transfer_records import TransferRecord
    from bascule.storage.base import ObjectInfo

    phase, n, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    WHEN = datetime(2026, 1, 1, tzinfo=UTC)
    MD5 = "1B2M2Y8AsgTpgAmY7PhCfg=="

    class DiskStore:  # the evidence store's streaming surface, on local disk
        prefix = ""
        def put_file(self, name, fileobj, content_type):
            with open(workdir / name.replace("/", "_"), "wb") as out:
                shutil.copyfileobj(fileobj, out)
            return name
        @contextlib.contextmanager
        def open(self, key):
            with open(workdir / key.replace("/", "_"), "rb") as f:
                yield f

    def key(i):
        return f"documents/year=2024/résultat {i:07d}.txt"

    def listing(version=0):  # lazily, in listing order; version 1: 0.1% modified, 0.1% added, 0.1% deleted
        for i in range(n):
            if version and i % 1000 == 1:
                continue
            etag = f"0x{i:X}" + ("b" if version and i % 1000 == 2 else "")
            yield ObjectInfo(key(i), 1024, etag, WHEN, content_md5=MD5, content_type="text/plain")
            if version and i % 1000 == 3:
                yield ObjectInfo(key(i) + " new", 1024, "0xNEW", WHEN)

    store = DiskStore()
    # Growth is counted from the RSS once imports are done, right before the phase starts.
    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024
    count = 0
    if phase == "inventory":
        count = write_inventory(listing(), store, "snapshot.jsonl.gz").count  # read back by the other phases
    elif phase == "delta":
        count = sum(1 for _ in iter_delta(read_inventory(store, "snapshot.jsonl.gz"), listing(1), order=azure_order))
    else:
        target = (ObjectInfo(o.key, o.size, "d41d8cd98f00b204e9800998ecf8427e-2", WHEN) for o in listing())
        records = (TransferRecord(o.key, o.key, "copied", o.size, o.etag, MD5, True,
                                  "d41d8cd98f00b204e9800998ecf8427e-2", True) for o in listing())
        def no_get(k):
            raise AssertionError(f"read back {k}")
        rows = compare(read_inventory(store, "snapshot.jsonl.gz"), target, source_prefix="", target_prefix="",
                       readback_md5=no_get, records=records)
        count = sum(1 for r in rows if r.verified)
    # VmHWM is this program's own high-water mark. ru_maxrss is not: Linux carries it across
    # exec, so it would report the RSS of the pytest process this child was forked from.
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"count": count, "growth_kib": peak - before, "peak_kib": peak, "before_kib": before}))
    """
)


def _run(phase: str, workdir: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, phase, str(OBJECTS), workdir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _result(process: subprocess.Popen[str]) -> dict[str, int]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_inventory_delta_and_parity_stay_under_256_mib_over_a_million_objects(tmp_path) -> None:
    # The inventory phase writes the snapshot the other two read; those two then run side by side.
    inventory = _result(_run("inventory", str(tmp_path)))
    delta, parity = _run("delta", str(tmp_path)), _run("parity", str(tmp_path))
    results = {"inventory": inventory, "delta": _result(delta), "parity": _result(parity)}
    assert results["inventory"]["count"] == OBJECTS
    assert results["delta"]["count"] == 3 * OBJECTS // 1000  # 0.1% each: modified, added, deleted
    assert results["parity"]["count"] == OBJECTS  # every object proven by its record, no read back
    for phase, result in results.items():
        assert result["growth_kib"] < LIMIT_MIB * 1024, (phase, result)
