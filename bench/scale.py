"""Object cutover at scale: does the source's write-block grow with the object count? (issue #16)

For each N (1,000 and 10,000; 100,000 with ``--large``): fresh Azurite and moto, N objects
of 1 KiB seeded in parallel under ``data/`` (container with a stored access policy
``writers``); then, each phase in a fresh child process (its peak RSS is its own),
through the project's phase functions and no Airflow: snapshot, transfer, parity at
validate; writers modify 0.1% and add 0.1%; the floor (a bare listing of both sides at
once, and the copy of just the changed objects); freeze, delta [, copy], parity, routing
switch, smoke, unfreeze. Per phase: wall and CPU seconds, requests by kind and side
(counted by a hook on the Azure SDK's transport and a boto3 ``before-send`` handler),
peak RSS (VmHWM reset at the phase's start) and its growth; the growth between N values;
the verdict against the issue's targets (write-block <= 1.5 x floor listing + copy of the
changes; requests freeze -> switch <= N/500 + 5 x changes + 50; RSS growth <= 256 MiB);
the extrapolation to 1M and 10M objects, on the stand-ins and for a stated real-service
ASSUMPTION (REAL_* below). Method and figures: docs/benchmarks.md, "Object cutover at scale".

``--impl old`` calls the functions committed before #16 (leases, dict delta, a HEAD per
object; ``OldImpl``), ``--impl new`` the #16 ones (``NewImpl`` names them); the default,
``auto``, picks new when the checkout has ``phases.sync_delta``. To measure
another checkout, put it first on the path (the header prints which ``bascule`` ran):
``PYTHONPATH=../before-16/include:../before-16/plugins .venv/bin/python bench/scale.py``.

Run: ``.venv/bin/python bench/scale.py [--impl old|new] [--large] [--sizes 1000,10000]
[--freeze-only] [--json PATH]`` (``--freeze-only``: seed, floor, freeze, unfreeze).
Exit status 0 whatever the figures; 1 if a parity check failed or a phase raised.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _common import s3_client, uptime

ROOT = Path(__file__).resolve().parents[1]
# Only scripts/ is added: bascule comes from PYTHONPATH (another checkout) or the venv's .pth.
sys.path.insert(0, str(ROOT / "scripts"))

import devstack  # noqa: E402

MiB = 1024 * 1024
OBJECT_SIZE = 1024
PREFIX = "data/"
CONTAINER = "scale"
BUCKET = "scale-target"
EVIDENCE_BUCKET = "scale-evidence"  # Bascule's records, never in the data bucket
FLOOR_BUCKET = "scale-floor"
WRITERS_POLICY = "writers"
WORKLOAD_ID = "scale_bench"
CHANGE_FRACTION = 0.001  # modified, and again added, after the snapshot
SEED_THREADS = 16
FLOOR_REPEATS = 3  # 1 from 100,000 objects up: one listing of both sides is then minutes
KINDS = ("LIST", "HEAD", "GET", "PUT", "lease", "policy", "other")
CUTOVER = ("freeze", "delta", "copy", "parity")  # freeze start to just before the switch ("copy": old code only)
PHASES = ("snapshot", "transfer", "validate", "writers", "floor", *CUTOVER, "switch", "smoke", "unfreeze")
# Issue #16's targets.
BLOCK_FLOOR_FACTOR = 1.5
RSS_LIMIT_MIB = 256
# Real-service ASSUMPTION for the extrapolation (not measured here).
REAL_REQUEST_S = 0.020
REAL_PARALLEL = 16
REAL_LIST_PAGE_S = 0.100
EXTRAPOLATE = (1_000_000, 10_000_000)


def key_of(index: int) -> str:
    return f"{PREFIX}obj-{index:07d}.bin"


def added_key_of(index: int) -> str:
    return f"{PREFIX}obj-{index:07d}-added.bin"  # sorts among the others, not at the end


def body_of(key: str, version: int = 1) -> bytes:
    return hashlib.blake2b(f"{key}:{version}".encode()).digest() * (OBJECT_SIZE // 64)


def changed_indexes(n: int) -> list[int]:
    step = round(1 / CHANGE_FRACTION)
    return list(range(step // 2, n, step)) or [0]


# -- counting requests ------------------------------------------------------------------


class Meter:
    """Requests by (phase, side, kind), attributed to the phase running when they are sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.phase = "setup"

    def add(self, side: str, kind: str) -> None:
        with self.lock:
            self.counts[(self.phase, side, kind)] += 1

    def of(self, phase: str) -> dict[str, Any]:
        kinds = {k: sum(v for (p, _, kk), v in self.counts.items() if p == phase and kk == k) for k in KINDS}
        sides = {s: sum(v for (p, ss, _), v in self.counts.items() if p == phase and ss == s) for s in ("src", "tgt")}
        return {"kinds": kinds, "sides": sides, "total": sum(kinds.values())}


METER = Meter()


def azure_kind(method: str, url: str) -> str:
    query = parse_qs(urlsplit(url).query)
    comp, restype = query.get("comp", [""])[0], query.get("restype", [""])[0]
    if comp == "list":
        return "LIST"
    if comp == "lease":
        return "lease"
    if comp == "acl":
        return "policy"
    if method == "HEAD":
        return "HEAD"
    if restype == "container" or comp in ("metadata", "properties"):
        return "other"
    return method if method in ("GET", "PUT") else "other"


S3_KINDS = {
    "ListObjectsV2": "LIST", "ListObjects": "LIST", "ListMultipartUploads": "LIST", "ListParts": "LIST",
    "HeadObject": "HEAD", "GetObject": "GET",
    "PutObject": "PUT", "UploadPart": "PUT", "CreateMultipartUpload": "PUT",
    "CompleteMultipartUpload": "PUT", "CopyObject": "PUT", "UploadPartCopy": "PUT",
}  # fmt: skip


def install_azure_hook() -> None:
    """Count every request any Azure SDK client of this process sends (retries included)."""
    from azure.core.pipeline.transport import RequestsTransport

    original = RequestsTransport.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        METER.add("src", azure_kind(request.method, request.url))
        return original(self, request, **kwargs)

    RequestsTransport.send = send


def count_s3(client: Any) -> Any:
    def before_send(request: Any, event_name: str = "", **_: Any) -> None:
        METER.add("tgt", S3_KINDS.get(event_name.rsplit(".", 1)[-1], "other"))
        return None  # a value would replace the response

    client.meta.events.register("before-send.s3", before_send)
    return client


# -- clients ----------------------------------------------------------------------------


def azure_service(port: int, **extra: Any) -> Any:
    from azure.storage.blob import BlobServiceClient

    from bascule.objects.copy_config import recommended_azure_client_kwargs

    return BlobServiceClient(
        devstack.azurite_url(port),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        **{**recommended_azure_client_kwargs(), **extra},
    )


def upload(container: Any, key: str, version: int = 1) -> None:
    from azure.storage.blob import ContentSettings

    data = body_of(key, version)
    md5 = bytearray(hashlib.md5(data, usedforsecurity=False).digest())
    container.upload_blob(key, data, overwrite=True, content_settings=ContentSettings(content_md5=md5))


def seed_range(port: int, start: int, stop: int) -> int:
    """Upload objects ``start..stop-1`` (also run in a spawned process for large N)."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=SEED_THREADS + 2)
    session.mount("http://", adapter)
    container = azure_service(port, session=session).get_container_client(CONTAINER)
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda i: upload(container, key_of(i)), range(start, stop)))
    return stop - start


def seed(port: int, n: int) -> float:
    from azure.storage.blob import AccessPolicy, ContainerSasPermissions

    started = time.monotonic()
    container = azure_service(port).create_container(CONTAINER)
    # What writers' SAS tokens are bound to: the policy freeze revokes it (the lease freeze ignores it).
    writers = AccessPolicy(
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
        start=datetime.now(UTC) - timedelta(minutes=5),
        expiry=datetime.now(UTC) + timedelta(days=1),
    )
    container.set_container_access_policy(signed_identifiers={WRITERS_POLICY: writers})
    if n <= 20_000:
        seed_range(port, 0, n)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        step = 10_000
        with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = pool.map(seed_range, [port] * len(range(0, n, step)), range(0, n, step),
                            [min(n, s + step) for s in range(0, n, step)])  # fmt: skip
            assert sum(done) == n
    return time.monotonic() - started


# -- the two implementations ----------------------------------------------------------------


@dataclass
class Run:
    """What the phases share inside the child."""

    workload: Any
    service: Any  # BlobServiceClient
    container: Any  # ContainerClient of the source
    source: Any  # AzureBlobContainer
    target: Any  # S3Bucket
    evidence: Any
    routing: Any
    snapshot: dict[str, Any] = field(default_factory=dict)
    final_key: str = ""
    final_count: int = 0
    n: int = 0
    changed: list[Any] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=lambda: {"workload": WORKLOAD_ID, "run": "bench"})

    @property
    def base(self) -> str:
        return f"snapshots/{self.snapshot.get('snapshot_id', 'none')}/cutover-try1"


class OldImpl:
    """The functions committed before #16: a lease per blob, a dict delta, a HEAD per target object."""

    name = "old: leases, dict delta, HEAD-per-object parity"
    manifest_patch: dict[str, Any] = {}
    separate_copy = True  # the delta is listed and compared first, then copied

    def freeze(self, run: Run) -> dict[str, Any]:
        from bascule.objects.freeze import freeze

        report = freeze(run.container, PREFIX, WORKLOAD_ID, concurrency=8)  # as phases.cutover calls it
        return {"probe_wait_s": 0.0, "detail": f"{report.leased} leases"}

    def unfreeze(self, run: Run) -> str:
        from bascule.objects.freeze import unfreeze

        return f"{unfreeze(run.container, PREFIX, WORKLOAD_ID, concurrency=8).released} released"

    def delta(self, run: Run) -> str:
        from bascule.objects.compare import delta
        from bascule.objects.inventory import read_inventory, write_inventory

        final = write_inventory(run.source.iter_objects(PREFIX), run.evidence, f"{run.base}/final-inventory.jsonl.gz")
        run.final_key = final.key
        changes = delta(read_inventory(run.evidence, run.snapshot["inventory_key"]), read_inventory(run.evidence, final.key))
        run.changed, run.deleted = list(changes.changed), list(changes.deleted)
        return f"{len(run.changed)} changed, {len(run.deleted)} deleted"

    def copy(self, run: Run) -> str:
        from bascule.objects.copy_config import CopyConfig
        from bascule.objects.shard import copy_shard

        w = run.workload
        report = copy_shard(
            run.changed, run.source, run.target, source_prefix=w.source.prefix, target_prefix=w.target.prefix,
            snapshot_id=run.snapshot["snapshot_id"], concurrency=w.transfer.concurrency,
            config=CopyConfig(preferred_part_size=w.transfer.part_size_mib * MiB),
        )  # fmt: skip
        if report.failed:
            raise RuntimeError(f"delta copy: {report.failed} failed: {report.to_dict()['failures'][:3]}")
        for key in run.deleted:
            run.target.delete(w.target_key(key))
        return f"{report.copied} copied, {len(run.deleted)} deleted"

    def parity(self, run: Run, inventory_key: str, name: str) -> tuple[bool, str]:
        from bascule.objects.inventory import read_inventory
        from bascule.objects.phases import prove_parity

        outcome = prove_parity(
            run.workload, read_inventory(run.evidence, inventory_key), run.target, run.evidence, name, run.context
        )
        return outcome.success, f"{outcome.rows} rows, {len(outcome.problems)} problems"

    def smoke(self, run: Run) -> str:
        from bascule.objects.inventory import read_inventory
        from bascule.objects.phases import smoke_check

        final = list(read_inventory(run.evidence, run.final_key))
        return str(smoke_check(run.workload, run.routing, lambda _bucket: run.target, final)["checked"]) + " checked"


class NewImpl(OldImpl):
    """``--impl new``: the #16 functions, as ``phases.cutover`` calls them. If a name moves, edit it here.

    - freeze: ``bascule.objects.freeze.freeze(container, prefix, workload_id, concurrency=8,
      config=workload.cutover.freeze, on_record=...)`` -> ``FreezeReport.probe_wait_seconds``;
      ``bascule.objects.freeze.unfreeze(container, prefix, workload_id, config=...)``; the manifest
      gets ``cutover.freeze: {method: stored_access_policy, policy_id: writers}``.
    - delta: ``bascule.objects.phases.sync_delta(workload, source, target, evidence, snapshot, base,
      attempt, log)`` -> ``{"final_inventory_key", "objects", "delta": {...}}``: listing, merge-join
      and copy in one stream, so there is no separate "copy" phase.
    - parity: at validate ``bascule.objects.phases.prove_parity`` (from ``bascule.objects.parity``),
      same call as before; at cutover ``phases.final_parity`` (a fresh source listing read ahead
      beside the target's, as each delta round of ``phases.settle_delta``); smoke:
      ``phases.smoke_check(..., final_objects, count)``.
    """

    name = "new: stored access policy, merge-join delta, listing-based parity"
    manifest_patch = {"cutover": {"freeze": {"method": "stored_access_policy", "policy_id": WRITERS_POLICY}}}
    separate_copy = False

    def freeze(self, run: Run) -> dict[str, Any]:
        from bascule.objects.freeze import freeze

        report = freeze(
            run.container, PREFIX, WORKLOAD_ID, concurrency=8, config=run.workload.cutover.freeze,
            on_record=lambda before: run.evidence.put_json(f"{run.base}/freeze-policy-before.json", before),
        )  # fmt: skip
        wait = float(report.probe_wait_seconds)
        return {"probe_wait_s": wait, "detail": f"{report.method}, probe refused after {wait:.2f} s "
                f"({report.probe_attempts} attempt(s))"}  # fmt: skip

    def unfreeze(self, run: Run) -> str:
        from bascule.objects.freeze import unfreeze

        report = unfreeze(run.container, PREFIX, WORKLOAD_ID, config=run.workload.cutover.freeze)
        return f"policy restored: {bool(report.policy_restored)}, {report.released} released"

    def delta(self, run: Run) -> str:
        from bascule.objects.phases import sync_delta

        synced = sync_delta(run.workload, run.source, run.target, run.evidence, run.snapshot, run.base, 1, lambda _: None)
        run.final_key, run.final_count = synced["final_inventory_key"], synced["objects"]
        d = synced["delta"]
        return f"{d['new']} new, {d['modified']} modified, {d['deleted_count']} deleted, {d['copied']} copied"

    def parity(self, run: Run, inventory_key: str, name: str) -> tuple[bool, str]:
        if inventory_key != run.final_key:  # validate: against the snapshot inventory, as before
            return super().parity(run, inventory_key, name)
        from bascule.objects.phases import final_parity

        # At cutover, as phases.settle_delta proves each round: a fresh source listing beside the target's.
        outcome, _ = final_parity(run.workload, run.source, run.target, run.evidence, run.snapshot, name, run.context)
        return outcome.success, f"{outcome.rows} rows, {len(outcome.problems)} problems (fresh source listing)"

    def smoke(self, run: Run) -> str:
        from bascule.objects.inventory import read_inventory
        from bascule.objects.phases import smoke_check

        final = read_inventory(run.evidence, run.final_key)
        checked = smoke_check(run.workload, run.routing, lambda _bucket: run.target, final, run.final_count)
        return f"{checked['checked']} checked"


IMPLS: dict[str, type[OldImpl]] = {"old": OldImpl, "new": NewImpl}


# -- the child: phases, one after another -----------------------------------------------------


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@contextmanager
def measured(name: str) -> Iterator[dict[str, Any]]:
    """One phase: wall and CPU seconds, requests, peak RSS (VmHWM reset at the start) and its growth."""
    gc.collect()
    exact = _reset_peak()
    start_kib, cpu0 = _status_kib("VmRSS"), _cpu()
    METER.phase = name
    record: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        yield record
    finally:
        record["seconds"] = time.monotonic() - t0
        METER.phase = "after"
        record["cpu_s"] = _cpu() - cpu0
        peak_kib = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record["peak_mib"] = peak_kib / 1024
        record["rss_growth_mib"] = max(0, peak_kib - start_kib) / 1024
        record["requests"] = METER.of(name)
        print(f"  {name:<9} {record['seconds']:8.2f} s  {record['requests']['total']:>8} requests  "
              f"{record.get('detail', '')}", flush=True)  # fmt: skip


def floor_listing(run: Run) -> dict[str, Any]:
    """A bare listing of both sides at once: what any listing-based cutover must at least pay."""
    client = run.target.client

    def source_side() -> tuple[int, float]:
        t0 = time.monotonic()
        return sum(1 for _ in run.container.list_blobs(name_starts_with=PREFIX)), time.monotonic() - t0

    def target_side() -> tuple[int, float]:
        t0 = time.monotonic()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
        return sum(len(p.get("Contents", ())) for p in pages), time.monotonic() - t0

    walls, sides = [], []
    with ThreadPoolExecutor(2) as pool:
        repeats = FLOOR_REPEATS if run.n < 100_000 else 1
        for _ in range(repeats):
            t0 = time.monotonic()
            a, b = pool.submit(source_side), pool.submit(target_side)
            (ns, ts), (nt, tt) = a.result(), b.result()
            walls.append(time.monotonic() - t0)
            sides.append((ts, tt))
    i = walls.index(statistics.median(walls))
    return {"floor_s": walls[i], "source_list_s": sides[i][0], "target_list_s": sides[i][1],
            "source_objects": ns, "target_objects": nt, "repeats": walls}  # fmt: skip


def floor_copy(run: Run, keys: list[str]) -> float:
    """The copy of the changed objects alone, with the project's copier, into a scratch bucket."""
    from bascule.objects.shard import copy_shard
    from bascule.storage.s3 import S3Bucket

    scratch = S3Bucket(run.target.client, FLOOR_BUCKET)
    objects = [run.source.properties(key) for key in keys]
    t0 = time.monotonic()
    w = run.workload
    report = copy_shard(objects, run.source, scratch, source_prefix=PREFIX, target_prefix=PREFIX,
                        snapshot_id="floor", concurrency=w.transfer.concurrency, target_keys=None)  # fmt: skip
    seconds = time.monotonic() - t0
    if report.copied != len(keys):
        raise RuntimeError(f"floor copy: {report.summary()}")
    return seconds


def prepare_imports() -> str:
    """Import what the phases import lazily, and run the GX gate once on one row: constants, not growth."""
    import bascule.objects.copy_config  # noqa: F401
    import bascule.objects.phases  # noqa: F401
    import bascule.objects.shard  # noqa: F401
    import bascule.validation.report  # noqa: F401
    from bascule.validation import object_gates

    try:
        row = {"key": "k", "in_source": True, "in_target": True, "source_size": 1, "target_size": 1,
               "source_md5": "x", "target_md5": "x", "verified": True}  # fmt: skip
        object_gates.run_parity([row])
        return "GX gate warmed up on one row"
    except Exception as exc:  # the #16 gate may take another shape: then only the import is done
        import great_expectations  # noqa: F401

        return f"GX imported (warm-up skipped: {type(exc).__name__})"


def make_run(spec: dict[str, Any], impl: OldImpl, state: dict[str, Any]) -> Run:
    import yaml

    import bascule
    from bascule.governance.evidence.store import EvidenceStore
    from bascule.governance.routing import RoutingRegistry
    from bascule.objects.inventory import from_record
    from bascule.storage.azure_blob import AzureBlobContainer
    from bascule.storage.s3 import S3Bucket
    from bascule.workload import ObjectStoreWorkload

    # The demo manifest of the checkout being measured (its schema is that checkout's).
    manifest = Path(bascule.__file__).resolve().parents[1] / "workloads" / "snds_extracts.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc.update(id=WORKLOAD_ID, validation={"suites": []}, shadow_run={"jobs": []})
    doc["source"].update(container=CONTAINER, prefix=PREFIX)
    doc["target"].update(bucket=BUCKET, prefix=PREFIX)
    if "evidence" in doc:  # an older checkout's manifest may have none
        doc["evidence"].update(bucket=EVIDENCE_BUCKET)
    doc["transfer"].update(shards=1, concurrency=8)
    for section, values in impl.manifest_patch.items():
        doc[section] = {**doc.get(section, {}), **values}
    service = azure_service(spec["azurite"])
    s3 = count_s3(s3_client(spec["moto"]))
    return Run(
        ObjectStoreWorkload.model_validate(doc), service, service.get_container_client(CONTAINER),
        AzureBlobContainer(service, CONTAINER), S3Bucket(s3, BUCKET), EvidenceStore(s3, EVIDENCE_BUCKET, WORKLOAD_ID),
        RoutingRegistry(s3, EVIDENCE_BUCKET), snapshot=state.get("snapshot", {}), final_key=state.get("final_key", ""),
        final_count=state.get("final_count", 0), changed=[from_record(c) for c in state.get("changed", [])],
        deleted=state.get("deleted", []), n=spec["n"],
    )  # fmt: skip


def step(name: str, impl: OldImpl, run: Run, r: dict[str, Any]) -> None:
    """Phase ``name`` through the adapter (or the phase functions both implementations share)."""
    from bascule.objects import phases

    if name == "snapshot":
        run.snapshot = phases.take_snapshot(run.workload, run.source, run.evidence, "bench-try1")
        r["detail"] = f"{run.snapshot['objects']} objects"
    elif name == "transfer":
        t = phases.transfer_shard(run.workload, run.source, run.target, run.evidence, run.snapshot, 0, 1)
        r["detail"] = f"{t['copied']} copied, {t['skipped']} skipped"
    elif name == "validate":
        r["ok"], r["detail"] = impl.parity(run, run.snapshot["inventory_key"], "snapshots/bench-try1/validate")
    elif name == "writers":  # the application, not Bascule: excluded from the verdict
        for i in changed_indexes(run.n):
            upload(run.container, key_of(i), version=2)
            upload(run.container, added_key_of(i))
        r["detail"] = f"{len(changed_indexes(run.n))} modified, as many added"
    elif name == "floor":
        r.update(floor_listing(run))
        changed = changed_indexes(run.n)
        r["copy_s"] = floor_copy(run, [key_of(i) for i in changed] + [added_key_of(i) for i in changed])
        r["detail"] = f"listing, median of {len(r['repeats'])}: {r['floor_s']:.2f} s; copy of the changes {r['copy_s']:.2f} s"
    elif name == "parity":
        r["ok"], r["detail"] = impl.parity(run, run.final_key, run.base)
    elif name == "switch":
        azure, scaleway = phases.locations(run.workload, run.source, run.target)
        run.routing.ensure(WORKLOAD_ID, azure, scaleway, "bench")
        r["detail"] = "changed" if run.routing.switch(WORKLOAD_ID, "scaleway", "bench", "bench cutover")[1] else "-"
    else:  # freeze, delta, copy, smoke, unfreeze
        r.update(detail=getattr(impl, name)(run))
        if isinstance(r["detail"], dict):  # freeze: {"probe_wait_s", "detail"}
            r.update(r.pop("detail"))


def child(spec: dict[str, Any], name: str, state_path: Path) -> dict[str, Any]:
    """One phase in a process of its own: its peak RSS is its own, not the leftovers of the phase before."""
    from bascule.objects.inventory import to_record

    impl = IMPLS[spec["impl"]]()
    install_azure_hook()
    t0, rss0 = time.monotonic(), _status_kib("VmRSS")
    warm = prepare_imports()
    setup = {"imports_s": time.monotonic() - t0, "rss_after_imports_mib": _status_kib("VmRSS") / 1024,
             "rss_before_imports_mib": rss0 / 1024, "warm": warm}  # fmt: skip
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    run = make_run(spec, impl, state)
    with measured(name) as record:
        step(name, impl, run, record)
    state.update(snapshot=run.snapshot, final_key=run.final_key, final_count=run.final_count,
                 changed=[to_record(c) for c in run.changed], deleted=run.deleted)  # fmt: skip
    state_path.write_text(json.dumps(state, default=str))
    return {**record, "setup": setup}


# -- the parent: servers, seeding, one child per N, the report ----------------------------------


class Stand:
    def __init__(self, state: Path):
        self.state = state
        self.ports = devstack.Ports(azurite=0, moto=0)

    def fresh(self) -> None:
        """Both stand-ins restarted empty: moto never gives memory back, Azurite keeps its database."""
        self.stop()
        shutil.rmtree(self.state / "azurite", ignore_errors=True)
        self.ports = devstack.Ports(azurite=devstack.free_port(), moto=devstack.free_port())
        devstack.start_azurite(self.state, self.ports.azurite)
        devstack.start_moto(self.state, self.ports.moto)

    def stop(self) -> None:
        for name in ("moto", "azurite"):
            devstack.stop_process(self.state, name)


def run_size(stand: Stand, n: int, impl: str, freeze_only: bool) -> dict[str, Any]:
    from bascule.storage.s3 import S3Bucket

    stand.fresh()
    print(f"\nN = {n:,}: seeding {n:,} x 1 KiB into Azurite ...", flush=True)
    seed_s = seed(stand.ports.azurite, n)
    print(f"  seeded in {seed_s:.1f} s ({n / seed_s:,.0f} objects/s)", flush=True)
    s3 = s3_client(stand.ports.moto)
    for bucket in (BUCKET, FLOOR_BUCKET, EVIDENCE_BUCKET):
        S3Bucket(s3, bucket).create(devstack.TARGET_REGION)
    spec = {"n": n, "impl": impl, "azurite": stand.ports.azurite, "moto": stand.ports.moto}
    names = [p for p in PHASES if p != "copy" or IMPLS[impl].separate_copy]
    if freeze_only:
        names = ["writers", "floor", "freeze", "unfreeze"]
    result: dict[str, Any] = {"n": n, "changes": 2 * len(changed_indexes(n)), "seed_s": seed_s, "phases": {},
                              "setup": [], "ok": True, "impl": IMPLS[impl].name}  # fmt: skip
    state = stand.state / f"state-{n}.json"
    for name in names:
        out = stand.state / f"phase-{n}-{name}.json"
        argv = [sys.executable, __file__, "--child", json.dumps(spec), "--phase", name, "--state", str(state),
                "--json", str(out)]  # fmt: skip
        done = subprocess.run(argv, env=os.environ.copy(), timeout=4 * 3600, check=False)
        if done.returncode != 0 or not out.exists():
            return {**result, "error": f"phase {name}: child exited {done.returncode}"}
        record = json.loads(out.read_text())
        result["setup"].append(record.pop("setup"))
        result["ok"] &= record.get("ok", True)
        result["phases"][name] = record
    return result


def fmt_row(name: str, r: dict[str, Any]) -> str:
    q = r["requests"]
    kinds = " ".join(f"{q['kinds'][k]:>7}" for k in KINDS)
    return (f"  {name:<9} {r['seconds']:>8.2f} {r['cpu_s']:>7.2f} {kinds} {q['total']:>8} {q['sides']['src']:>7} "
            f"{q['sides']['tgt']:>7} {r['peak_mib']:>7.0f} {r['rss_growth_mib']:>7.1f}")  # fmt: skip


def verdict(res: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    p, n, changes = res["phases"], res["n"], res["changes"]
    lines: list[str] = []
    figures: dict[str, float] = {}
    rss = max(r["rss_growth_mib"] for k, r in p.items() if k not in ("writers", "floor"))
    peak = max(r["peak_mib"] for k, r in p.items() if k not in ("writers", "floor"))
    if "parity" in p:
        probe = p["freeze"].get("probe_wait_s", 0.0)
        block = sum(p[k]["seconds"] for k in CUTOVER if k in p) - probe
        budget = BLOCK_FLOOR_FACTOR * p["floor"]["floor_s"] + p["floor"]["copy_s"]
        requests = sum(p[k]["requests"]["total"] for k in CUTOVER if k in p)
        allowed = n / 500 + 5 * changes + 50
        figures.update(block_s=block, budget_s=budget, requests=requests, allowed=allowed, probe_s=probe)
        lines += [
            f"  write-block {block:.2f} s (probe wait {probe:.2f} s excluded) vs 1.5 x floor {p['floor']['floor_s']:.2f} s"
            f" + copy of the changes {p['floor']['copy_s']:.2f} s = {budget:.2f} s: {block / budget:.2f}x the budget  "
            f"{'PASS' if block <= budget else 'MISS'}",
            f"  requests freeze->switch {requests:,} vs N/500 + 5 x {changes} + 50 = {allowed:,.0f}: "
            f"{requests / allowed:.1f}x  {'PASS' if requests <= allowed else 'MISS'}",
        ]
    else:
        lines.append(f"  freeze only: freeze {p['freeze']['seconds']:.2f} s, unfreeze {p['unfreeze']['seconds']:.2f} s, "
                     f"floor {p['floor']['floor_s']:.2f} s: freeze = {p['freeze']['seconds'] / p['floor']['floor_s']:.1f}"
                     " x floor (no verdict on the whole write-block)")  # fmt: skip
    lines.append(f"  peak RSS growth of any phase {rss:.1f} MiB (absolute peak {peak:.0f} MiB) <= {RSS_LIMIT_MIB} MiB  "
                 f"{'PASS' if rss <= RSS_LIMIT_MIB else 'MISS'}")  # fmt: skip
    figures["rss_growth_mib"] = rss
    return lines, figures


def growth(results: list[dict[str, Any]]) -> list[str]:
    lines = ["", "Growth between N values (wall and requests: value at the larger N / at the smaller; RSS growth in MiB):",
             f"  {'phase':<9} {'N ratio':>8} {'wall':>7} {'requests':>9} {'+RSS MiB':>15}"]  # fmt: skip
    for small, large in zip(results, results[1:], strict=False):
        for name in PHASES:
            a, b = small["phases"].get(name), large["phases"].get(name)
            if not a or not b:
                continue

            def ratio(x: float, y: float) -> str:
                return f"x{y / x:.1f}" if x > 0 else "-"

            lines.append(f"  {name:<9} {'x' + str(round(large['n'] / small['n'])):>8} {ratio(a['seconds'], b['seconds']):>7} "
                         f"{ratio(a['requests']['total'], b['requests']['total']):>9} "
                         f"{a['rss_growth_mib']:>6.1f} -> {b['rss_growth_mib']:<6.1f}")  # fmt: skip
    return lines


def _fit(points: list[tuple[int, float]], m: int) -> float:
    """Linear in N through the two largest points (through the origin with one)."""
    if len(points) == 1:
        return points[0][1] * m / points[0][0]
    (n1, y1), (n2, y2) = points[-2:]
    slope = (y2 - y1) / (n2 - n1)
    return max(0.0, y2 + slope * (m - n2))


def extrapolate(results: list[dict[str, Any]]) -> list[str]:
    usable = [r for r in results if "parity" in r["phases"]]
    if len(usable) < 2:
        return ["", "Extrapolation needs two N values (a constant and a slope per phase): run with two sizes or more."]
    last, n_last = usable[-1]["phases"], usable[-1]["n"]
    names = [k for k in CUTOVER if k in last]

    def wall(r: dict[str, Any], name: str) -> float:
        return r["phases"][name]["seconds"] - (r["phases"][name].get("probe_wait_s", 0.0) if name == "freeze" else 0.0)

    costs = ", ".join(f"{k} {1000 * wall(usable[-1], k) / max(1, last[k]['requests']['total']):.1f}" for k in names)
    lines = ["", "Extrapolation to larger containers (fits on the two largest N; linear, so a lower bound where the",
             "cost per request itself grows with N, as the leases' did):",
             f"  measured ms per request at N = {n_last:,}: {costs}",
             "  stand-ins: each cutover phase's wall (probe wait excluded) fitted as a constant plus a cost per object",
             "  (the cost of the requests each object adds); budget = 1.5 x the floor listing + the copy of the changes",
             "  (0.2% of N), fitted the same way",
             f"  real service, ASSUMPTION (not measured): {REAL_REQUEST_S * 1000:.0f} ms per request, {REAL_PARALLEL} "
             f"in parallel; list pages one after another,",
             f"  {REAL_LIST_PAGE_S * 1000:.0f} ms each (5,000 names a page at the source, 1,000 keys at the target);"
             " requests per kind fitted linearly",
             f"  {'N':>11} {'requests':>11} {'block':>10} {'budget':>10} {'ratio':>7} {'block':>10} {'budget':>10} "
             f"{'ratio':>7}",
             f"  {'':>11} {'':>11} {'-- stand-ins --':^29} {'-- real service (assumed) --':^29}"]  # fmt: skip
    for m in EXTRAPOLATE:
        requests = block = real = 0.0
        for name in names:
            count = _fit([(r["n"], r["phases"][name]["requests"]["total"]) for r in usable], m)
            lists = _fit([(r["n"], r["phases"][name]["requests"]["kinds"]["LIST"]) for r in usable], m)
            requests += count
            block += _fit([(r["n"], wall(r, name)) for r in usable], m)
            real += lists * REAL_LIST_PAGE_S + (count - lists) * REAL_REQUEST_S / REAL_PARALLEL
        floor = _fit([(r["n"], r["phases"]["floor"]["floor_s"]) for r in usable], m)
        copy = _fit([(r["n"], r["phases"]["floor"]["copy_s"]) for r in usable], m)
        # The changes' copy on a real service: a HEAD, a GET and a PUT each, 16 at a time.
        copy_real = 2 * CHANGE_FRACTION * m * 3 * REAL_REQUEST_S / REAL_PARALLEL
        floor_real = max(m / 5000, m / 1000) * REAL_LIST_PAGE_S  # the two sides' pages, in parallel
        budget, budget_real = BLOCK_FLOOR_FACTOR * floor + copy, BLOCK_FLOOR_FACTOR * floor_real + copy_real
        lines.append(f"  {m:>11,} {requests:>11,.0f} {_duration(block):>10} {_duration(budget):>10} "
                     f"{block / budget:>6.1f}x {_duration(real):>10} {_duration(budget_real):>10} "
                     f"{real / budget_real:>6.1f}x")  # fmt: skip
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.1f} s"


def report(results: list[dict[str, Any]]) -> list[str]:
    head = (f"  {'phase':<9} {'wall s':>8} {'cpu s':>7} " + " ".join(f"{k:>7}" for k in KINDS)
            + f" {'total':>8} {'src':>7} {'tgt':>7} {'peakMiB':>7} {'+RSSMiB':>7}")  # fmt: skip
    lines = []
    for res in results:
        imports = [x["imports_s"] for x in res["setup"]] or [0.0]
        rss = [x["rss_after_imports_mib"] for x in res["setup"]] or [0.0]
        lines += [f"\nN = {res['n']:,} objects of 1 KiB, {res['changes']} changed after the snapshot; seeded in "
                  f"{res['seed_s']:.1f} s. Each phase in a fresh process: imports {min(imports):.1f}-{max(imports):.1f} s"
                  f" (not timed), RSS after them {min(rss):.0f}-{max(rss):.0f} MiB"
                  f" ({res['setup'][0]['warm'] if res['setup'] else '-'})", head]  # fmt: skip
        lines += [fmt_row(name, res["phases"][name]) for name in PHASES if name in res["phases"]]
        if "error" in res:
            lines += [f"  STOPPED: {res['error']}"]
            continue
        f = res["phases"]["floor"]
        lines.append(f"  floor: both sides listed at once {f['floor_s']:.2f} s (source {f['source_list_s']:.2f} s, "
                     f"{f['source_objects']:,} names; target {f['target_list_s']:.2f} s, {f['target_objects']:,} keys); "
                     f"copy of the {res['changes']} changes alone {f['copy_s']:.2f} s")  # fmt: skip
        lines += verdict(res)[0]
        if not res["ok"]:
            lines.append("  INCORRECT: a parity check failed")
    good = [r for r in results if "error" not in r]
    return lines + growth(good) + extrapolate(good)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["auto", *sorted(IMPLS)], default="auto",
                        help="auto: new if the checkout has phases.sync_delta (#16), else old")  # fmt: skip
    parser.add_argument("--sizes", help="comma-separated N values (default 1000,10000; with --large also 100000)")
    parser.add_argument("--large", action="store_true", help="add N = 100,000 (Azurite slows as it fills: seeding alone can take an hour)")
    parser.add_argument("--freeze-only", action="store_true", help="seed, floor, freeze, unfreeze only")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(json.loads(args.child), args.phase, Path(args.state))
        Path(args.json).write_text(json.dumps(result))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1_000, 10_000] + [100_000] * args.large
    import bascule
    from bascule.objects import phases

    if args.impl == "auto":
        args.impl = "new" if hasattr(phases, "sync_delta") else "old"
    print(f"bench/scale.py --impl {args.impl}: {IMPLS[args.impl].name}")
    print(f"bascule from {Path(bascule.__file__).parent}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {uptime()}")
    state = Path(tempfile.mkdtemp(prefix="bascule-scale-"))
    stand = Stand(state)
    results = []
    try:
        for n in sorted(sizes):
            results.append(run_size(stand, n, args.impl, args.freeze_only))
    finally:
        stand.stop()
        shutil.rmtree(state, ignore_errors=True)  # Azurite's data and the phases' state files
    print("\n".join(report(results)))
    print(f"\nmachine load at the end: {uptime()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r and r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
