"""Shadow runs, both kinds: what object jobs and SQL jobs share.

A shadow run executes the same job on the source copy and on the target copy of a
workload's data and compares the outputs: a difference is one the migration made
visible to users. Noise is calibrated as Diffy does it: each job runs **twice on the
source** (an A/A run); whatever differs between those two runs cannot tell anything
about the migration, so it is reported as non-deterministic and left out, and every
other part of the output must match the target's, numbers within a tolerance.

Object jobs (:mod:`bascule.validation.object_shadow`) compare flattened JSON results
field by field; SQL jobs (:mod:`bascule.validation.table_shadow`) compare rows. Both
report here: one :class:`ShadowComparison` per job in a :class:`ShadowReport`, so the
glue, the evidence and the approver read them alike. This module holds those records
and the pieces of a run both kinds use: the tolerance and job-name checks, the timing of
each run, a failed run (:class:`RunFailed`) and the numeric match
(:func:`numbers_match`).

Plain Python, no Airflow import.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Self

Scalar = str | int | float | bool | None
RunName = Literal["source", "source_again", "target"]
DiffKind = Literal["changed", "missing", "extra"]

REPORT_MAX_DIFFERENCES = 50


@dataclass(frozen=True)
class FieldDiff:
    """One field where the target's output is not the source's.

    ``kind`` is ``changed``, ``missing`` (in the target's output; ``target`` is then
    None) or ``extra`` (only in the target's output; ``source`` is then None).
    """

    path: str
    source: Scalar
    target: Scalar
    kind: DiffKind = "changed"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "source": self.source, "target": self.target}

    def describe(self) -> str:
        source = "<missing>" if self.kind == "extra" else json_text(self.source)
        target = "<missing>" if self.kind == "missing" else json_text(self.target)
        return f"{self.path}: source={source} target={target}"


@dataclass(frozen=True)
class ShadowComparison:
    """The outcome of one shadow job: its differences, or the error that stopped it."""

    job: str
    non_deterministic: list[str] = field(default_factory=list)
    differences: list[FieldDiff] = field(default_factory=list)
    fields_compared: int = 0
    rel_tol: float = 0.0
    abs_tol: float = 0.0
    # Set when the job raised (or returned something that cannot be flattened).
    error: str | None = None
    error_location: str | None = None
    failed_run: RunName | None = None
    durations_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_failure(
        cls,
        job: str,
        failure: RunFailed,
        error: str,
        rel_tol: float,
        abs_tol: float,
        durations: dict[str, float],
        **fields: Any,
    ) -> Self:
        """The comparison of a job that ``failure`` stopped: ``error``, the run that raised, the time spent."""
        return cls(
            job=job,
            rel_tol=rel_tol,
            abs_tol=abs_tol,
            error=error,
            failed_run=failure.run,
            durations_s=durations,
            **fields,
        )

    @property
    def ok(self) -> bool:
        return self.error is None and not self.differences

    @property
    def tolerance(self) -> str:
        return f"rel_tol={self.rel_tol:g}, abs_tol={self.abs_tol:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "ok": self.ok,
            "fields_compared": self.fields_compared,
            "non_deterministic": list(self.non_deterministic),
            "differences": [d.to_json() for d in self.differences],
            "rel_tol": self.rel_tol,
            "abs_tol": self.abs_tol,
            "error": self.error,
            "error_location": self.error_location,
            "failed_run": self.failed_run,
            "durations_s": dict(self.durations_s),
        }

    def headline(self) -> str:
        if self.error is not None:
            where = f" (at {self.error_location})" if self.error_location else ""
            return f"shadow job '{self.job}': ERROR on the {_RUN_LABELS[self.failed_run or 'source']} — {self.error}{where}"
        tolerance = self.tolerance
        excluded = f"{len(self.non_deterministic)} non-deterministic field(s) excluded"
        if self.differences:
            return (
                f"shadow job '{self.job}': FAILED — {len(self.differences)} difference(s) among "
                f"{self.fields_compared} field(s) compared ({tolerance}); {excluded}"
            )
        if self.fields_compared == 0 and self.non_deterministic:
            # Passing, but vacuously: the A/A run left nothing to check.
            return f"shadow job '{self.job}': ok but nothing compared — every field was non-deterministic"
        return f"shadow job '{self.job}': ok — {self.fields_compared} field(s) compared ({tolerance}); {excluded}"

    def diff_report(self, limit: int = REPORT_MAX_DIFFERENCES) -> str:
        """Readable text: the verdict, the first ``limit`` differences, the excluded fields."""
        lines = [self.headline()]
        for diff in self.differences[:limit]:
            lines.append(f"  {diff.describe()}")
        if len(self.differences) > limit:
            lines.append(f"  ... and {len(self.differences) - limit} more difference(s)")
        if self.non_deterministic:
            shown = ", ".join(self.non_deterministic[:limit])
            more = f" ... and {len(self.non_deterministic) - limit} more" if len(self.non_deterministic) > limit else ""
            lines.append(f"  non-deterministic (differed between two source runs, not compared): {shown}{more}")
        return "\n".join(lines)


_RUN_LABELS: dict[str, str] = {
    "source": "source run",
    "source_again": "second (A/A) source run",
    "target": "target run",
}


@dataclass(frozen=True)
class ShadowReport:
    """Every job's comparison, in the order the jobs were given."""

    comparisons: list[ShadowComparison]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    @property
    def failed(self) -> list[ShadowComparison]:
        return [c for c in self.comparisons if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "jobs": len(self.comparisons),
            "failed_jobs": [c.job for c in self.failed],
            "comparisons": [c.to_json() for c in self.comparisons],
        }

    def summary(self) -> list[str]:
        """One line for the run, then one per job."""
        passed = len(self.comparisons) - len(self.failed)
        head = f"shadow run: {passed}/{len(self.comparisons)} job(s) ok"
        if not self.comparisons:
            head = "shadow run: no shadow jobs declared, nothing compared"
        lines = [head]
        for comparison in self.comparisons:
            line = comparison.headline()
            if comparison.differences:
                line += f"; first: {comparison.differences[0].describe()}"
            lines.append(line)
        return lines

    def diff_report(self, limit: int = REPORT_MAX_DIFFERENCES) -> str:
        """The failing jobs' reports, one after the other."""
        return "\n\n".join(c.diff_report(limit) for c in self.failed)


class RunFailed(Exception):
    """One run of a job raised ``exc``: the job's failure, charged to ``run``."""

    def __init__(self, run: RunName, exc: BaseException):
        super().__init__(run, exc)
        self.run = run
        self.exc = exc


def check_tolerances(rel_tol: float, abs_tol: float) -> None:
    if not (rel_tol >= 0 and abs_tol >= 0):
        raise ValueError(f"tolerances must be >= 0, got rel_tol={rel_tol!r}, abs_tol={abs_tol!r}")


def check_unique_names(names: Iterable[str]) -> None:
    """Jobs are reported by name: two jobs with one name would hide one of them."""
    listed = list(names)
    repeated = sorted({n for n in listed if listed.count(n) > 1})
    if repeated:
        raise ValueError(f"shadow job names must be unique, repeated: {repeated}")


@contextlib.contextmanager
def timed(run: RunName, durations: dict[str, float]) -> Iterator[None]:
    """Record in ``durations[run]`` how long the block took (seconds, also when it raised)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        durations[run] = round(time.perf_counter() - started, 3)


def numbers_match(left: Any, right: Any, rel_tol: float, abs_tol: float) -> bool:
    """Two numbers equal, both NaN, or within ``math.isclose(rel_tol, abs_tol)``."""
    if left == right:  # exact first: large ints would lose precision in isclose
        return True
    lf, rf = float(left), float(right)
    if math.isnan(lf) and math.isnan(rf):
        return True
    return math.isclose(lf, rf, rel_tol=rel_tol, abs_tol=abs_tol)


def last_error_line(exc: BaseException) -> str:
    """``Type: message``, as the last line of a traceback shows it."""
    return traceback.format_exception_only(exc)[-1].strip()


def json_text(value: Any) -> str:
    """JSON spelling: keeps "3" and 3 apart and shows floats at full precision."""
    return json.dumps(value, ensure_ascii=False)
