"""Client-side encryption cost on one core: seal and open throughput, and the memory of streaming.

    .venv/bin/python bench/client_side.py [--mib 256] [--repeats 3]

Prints MB/s for sealing a buffered 8 MiB part (the copier's default), for streaming the
whole object through EncryptingStream and DecryptingStream, next to MD5 (which the copier
computes anyway) as the yardstick, and the tracemalloc peak of the streaming pass.
No network: this is the CPU the method adds per byte, not a transfer benchmark.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import statistics
import time
import tracemalloc

from bascule.storage.client_side import FRAME_SIZE, ClientSideKey, DecryptingStream, EncryptingStream, ObjectEnvelope

PART = 8 * 1024 * 1024


class _Zeros:
    """``size`` bytes of plaintext produced on demand (nothing held but one frame)."""

    def __init__(self, size: int):
        self.left = size
        self.block = os.urandom(FRAME_SIZE)

    def read(self, size: int = -1) -> bytes:
        take = min(self.left, FRAME_SIZE if size is None or size < 0 else size)
        self.left -= take
        return self.block[:take]


def _rate(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    kek = ClientSideKey(os.urandom(32), "bench")
    part = os.urandom(PART)
    results: dict[str, list[float]] = {"md5 (yardstick)": [], "seal 8 MiB part": [], "stream seal+open": []}
    peak = 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(size // PART):
            hashlib.md5(part).digest()
        results["md5 (yardstick)"].append(_rate(size, time.perf_counter() - started))

        envelope = ObjectEnvelope.new(kek, size)
        started = time.perf_counter()
        for index in range(size // PART):
            envelope.seal(part, index * PART)
        results["seal 8 MiB part"].append(_rate(size, time.perf_counter() - started))

        tracemalloc.start()
        started = time.perf_counter()
        reading = DecryptingStream(EncryptingStream(_Zeros(size), envelope, 0, size), envelope, "bench")
        for _ in iter(functools.partial(reading.read, 256 * 1024), b""):
            pass
        results["stream seal+open"].append(_rate(size, time.perf_counter() - started))
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    for name, rates in results.items():
        print(f"{name:20s} median {statistics.median(rates):8.1f} MB/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    print(f"streaming peak (tracemalloc): {peak / 2**20:.1f} MiB for a {args.mib} MiB object")


if __name__ == "__main__":
    main()
