"""Synthetic documents: the awkward part of a real object store, beside the SNDS-like tables.

Invented bytes, seeded like :mod:`bascule.synthetic.snds`: many small documents whose
names break careless URL-encoding, some empty, nested prefixes, and a few large
imaging files. :func:`generate_migration_demo` is the demo migration's whole container.

Standard library only; no Airflow import.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from bascule.synthetic.snds import DATASET_NAME, DatasetSpec, SyntheticObject, generate

MiB = 1024 * 1024


@dataclass(frozen=True)
class DocumentsSpec:
    """Many small documents with awkward names, and a few large imaging files.

    Names carry spaces, accents, ``%`` and ``+`` (which URL-encoding layers love to
    break), every 500th document is empty, and prefixes nest several levels deep:
    what a real health-data container holds beside its tables.
    """

    documents: int = 10_000
    large_files: int = 3
    large_size: int = 64 * MiB
    seed: int = 0


_DOCUMENT_NAMES = (
    "documents/year=2024/month={m:02d}/compte rendu {i:05d}.txt",
    "documents/year=2024/month={m:02d}/ordonnance-é{i:05d}.txt",
    "documents/year=2024/month={m:02d}/résultat 100% {i:05d}.txt",
    "documents/year=2024/month={m:02d}/bilan a+b {i:05d}.txt",
    "documents/archives/2019/q{q}/scans/scan {i:05d}.pdf",
)


def generate_documents(spec: DocumentsSpec) -> Iterator[SyntheticObject]:
    rng = random.Random(spec.seed)
    for i in range(spec.documents):
        name = _DOCUMENT_NAMES[i % len(_DOCUMENT_NAMES)].format(m=i % 12 + 1, q=i % 4 + 1, i=i)
        size = 0 if i % 500 == 0 else rng.randint(200, 2000)
        body = rng.randbytes(size) if name.endswith(".pdf") else _lorem(rng, size)
        content_type = "application/pdf" if name.endswith(".pdf") else "text/plain; charset=utf-8"
        yield SyntheticObject(
            name, body, content_type, {"dataset": DATASET_NAME, "synthetic": "true", "kind": "document"}
        )
    for i in range(spec.large_files):
        body = random.Random(spec.seed * 1000 + i).randbytes(spec.large_size)
        yield SyntheticObject(
            f"imaging/study {i:02d}/série IRM {i:02d}.dcm",
            body,
            "application/dicom",
            {"dataset": DATASET_NAME, "synthetic": "true", "kind": "imaging"},
        )


def _lorem(rng: random.Random, size: int) -> bytes:
    words = ("patient", "séjour", "diagnostic", "traitement", "suivi", "examen", "résultat", "dose")
    text = " ".join(rng.choice(words) for _ in range(size // 6 + 1)).encode()
    return text[:size]


def generate_migration_demo(tables: DatasetSpec, documents: DocumentsSpec) -> Iterator[SyntheticObject]:
    """The demo migration's whole container: the SNDS-like tables, then the documents."""
    yield from generate(tables)
    yield from generate_documents(documents)
