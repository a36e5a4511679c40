"""Object shadow runs: execute a workload's jobs on the source and the target copy, compare outputs.

A shadow job is any callable ``job(reader) -> result`` that reads a dataset through a
:class:`DatasetReader` and returns a JSON-able result (dicts, lists, str, int, float,
bool, None): typically one of the analyses the platform's users run on the data. The
same job runs on the Azure copy and on the Scaleway copy; a difference in the outputs is
a difference the migration made visible to users.

Noise is calibrated as Diffy does it (:mod:`bascule.validation.shadow`): each job runs
**twice on the source** (an A/A run) before it runs on the target. A field that differs between the two source runs (a
timestamp, a random id, a float summed in a racy order) cannot tell us anything about the
migration, so it is reported as non-deterministic and excluded; every other field must
match between the source and the target, within a numeric tolerance.

Results are compared field by field after :func:`flatten`. Flattening, and the
convention for lists of records that carry their own identity:

* a dict contributes one field per member, joined with ``.``: ``{"a": {"b": 1}}`` gives
  ``a.b``; a member name that is not made of letters, digits, ``_`` or ``-`` is quoted,
  ``["I21.9"]``;
* a list contributes one field per item by position: ``rows[3].value``;
* a **keyed collection** ``{"__key__": "month", "rows": [...]}`` (or ``"__key__":
  ["month", "chapter"]`` for a composite key) contributes its records by key instead of
  position: ``by_month[month=2024-01].count``, so the same records in another order are
  not a difference. The key fields live in the path and are not repeated as fields; the
  key must be unique across the rows (a duplicate is an error, since keying would
  otherwise silently drop a record). String key values that read like JSON literals are
  quoted (``[sex="1"]``) so that ``"1"`` and ``1`` stay distinct. A keyed collection holds
  only ``__key__`` and ``rows``;
* a scalar result alone is the single field ``(result)``;
* empty dicts and lists contribute no field: a section that vanished on the target shows
  as its missing fields.

Plain Python, no Airflow import: the glue in ``plugins/`` builds the readers from
connections and turns a failing :class:`~bascule.validation.shadow.ShadowReport` into a failed task.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bascule.exceptions import BasculeError
from bascule.validation.shadow import (
    FieldDiff,
    RunFailed,
    RunName,
    Scalar,
    ShadowComparison,
    ShadowReport,
    check_tolerances,
    check_unique_names,
    last_error_line,
    numbers_match,
    timed,
)

ShadowJobFn = Callable[["DatasetReader"], Any]

KEY_MARKER = "__key__"
ROWS_FIELD = "rows"
ROOT_PATH = "(result)"

_CALLABLE_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_BARE_NAME = re.compile(r"[\w-]+")
# A key value spelled like a JSON number or literal is quoted so "1" and 1 stay distinct.
_LOOKS_LITERAL = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")


class DatasetReader(Protocol):
    """Read-only view of one copy of a dataset, by keys relative to its root.

    ``read`` raises ``KeyError`` for a key that is not there.
    """

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def read(self, key: str) -> bytes: ...


class MappingReader:
    """A dataset held in memory as ``{key: bytes}``: for tests and demos."""

    def __init__(self, objects: Mapping[str, bytes]):
        # A copy, so that a test editing its dict afterwards does not edit "the source".
        self._objects = dict(objects)

    def keys(self, prefix: str = "") -> Iterator[str]:
        # Sorted like the object stores list (lexicographic), so jobs see a realistic order.
        return iter(sorted(k for k in self._objects if k.startswith(prefix)))

    def read(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise KeyError(f"no object {key!r} in the dataset") from None


class ShadowJobSpecError(BasculeError):
    """A shadow job's ``package.module:function`` cannot be resolved to a callable."""


def resolve_job(spec: str) -> ShadowJobFn:
    """Import ``"package.module:function"`` and return the callable it names."""
    if not _CALLABLE_SPEC.fullmatch(spec):
        raise ShadowJobSpecError(f"shadow job callable {spec!r}: expected 'package.module:function'")
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Tell "the module named in the manifest does not exist" apart from "it exists but
        # one of its own imports is missing": the fixes are in different places.
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ShadowJobSpecError(f"shadow job callable {spec!r}: no module named {module_name!r}") from exc
        raise ShadowJobSpecError(f"shadow job callable {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ShadowJobSpecError(
            f"shadow job callable {spec!r}: importing {module_name!r} failed: {last_error_line(exc)}"
        ) from exc
    try:
        job = getattr(module, attribute)
    except AttributeError:
        raise ShadowJobSpecError(f"shadow job callable {spec!r}: module {module_name!r} has no {attribute!r}") from None
    if not callable(job):
        raise ShadowJobSpecError(
            f"shadow job callable {spec!r}: {attribute!r} is a {type(job).__name__}, not a callable"
        )
    return job


# --- flattening -------------------------------------------------------------------


def flatten(result: Any) -> dict[str, Scalar]:
    """``result`` as ``{path: scalar}``, following the conventions in the module docstring.

    Raises ``TypeError`` for a value that is not JSON-able and ``ValueError`` for a
    malformed keyed collection, each naming the path.
    """
    out: dict[str, Scalar] = {}
    _flatten(result, "", out)
    return out


def _flatten(value: Any, path: str, out: dict[str, Scalar]) -> None:
    if isinstance(value, Mapping):
        if KEY_MARKER in value:
            _flatten_keyed(value, path, out)
            return
        for name, member in value.items():
            if not isinstance(name, str | int) or isinstance(name, bool):
                raise TypeError(f"{path or ROOT_PATH}: dict key {name!r} is not a string")
            _flatten(member, _member_path(path, str(name)), out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", out)
    elif value is None or isinstance(value, str | int | float):
        out[path or ROOT_PATH] = value
    else:
        raise TypeError(
            f"{path or ROOT_PATH}: {type(value).__name__} is not JSON-able; "
            "return str, int, float, bool, None, lists and dicts (e.g. a date as .isoformat())"
        )


def _flatten_keyed(value: Mapping[Any, Any], path: str, out: dict[str, Scalar]) -> None:
    where = path or ROOT_PATH
    extra = set(value) - {KEY_MARKER, ROWS_FIELD}
    if extra:
        raise ValueError(
            f"{where}: a keyed collection holds only {KEY_MARKER!r} and {ROWS_FIELD!r}, also got {sorted(extra)}"
        )
    declared = value[KEY_MARKER]
    key_fields = [declared] if isinstance(declared, str) else declared
    if not isinstance(key_fields, list | tuple) or not key_fields or not all(isinstance(f, str) for f in key_fields):
        raise ValueError(f"{where}: {KEY_MARKER!r} must name a field or a non-empty list of fields, got {declared!r}")
    rows = value.get(ROWS_FIELD)
    if not isinstance(rows, list | tuple):
        raise ValueError(f"{where}: a keyed collection needs {ROWS_FIELD!r} as a list of records")
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}.{ROWS_FIELD}[{index}]: a keyed record must be a dict, got {type(row).__name__}")
        parts = []
        for name in key_fields:
            if name not in row:
                raise ValueError(f"{where}.{ROWS_FIELD}[{index}]: record has no key field {name!r}")
            key_value = row[name]
            if not (key_value is None or isinstance(key_value, str | int | float)):
                raise ValueError(f"{where}.{ROWS_FIELD}[{index}]: key field {name!r} must be a scalar")
            parts.append(f"{name}={_key_text(key_value)}")
        record_path = f"{path}[{','.join(parts)}]"
        if record_path in seen:
            raise ValueError(f"{where}: duplicate key {record_path[len(path) :]} in {ROWS_FIELD!r}")
        seen.add(record_path)
        for name, member in row.items():
            if name not in key_fields:
                _flatten(member, _member_path(record_path, str(name)), out)


def _member_path(path: str, name: str) -> str:
    if _BARE_NAME.fullmatch(name):
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def _key_text(value: Scalar) -> str:
    if isinstance(value, str) and _BARE_NAME.fullmatch(value) and not _LOOKS_LITERAL.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


# --- comparison -------------------------------------------------------------------


def compare_runs(
    job_name: str,
    source_a: Any,
    source_b: Any,
    target: Any,
    *,
    rel_tol: float = 0.0,
    abs_tol: float = 0.0,
) -> ShadowComparison:
    """Compare one job's results: two source runs (A/A) calibrate the noise, then the target.

    A field present in only one of the source runs, or differing between them beyond
    the tolerance, is non-deterministic and not compared. Every other field of either
    the first source run or the target must be in both and match within the tolerance.
    """
    check_tolerances(rel_tol, abs_tol)
    return _compare_flat(job_name, flatten(source_a), flatten(source_b), flatten(target), rel_tol, abs_tol)


def _compare_flat(
    job_name: str,
    a: dict[str, Scalar],
    a_again: dict[str, Scalar],
    target: dict[str, Scalar],
    rel_tol: float,
    abs_tol: float,
) -> ShadowComparison:
    noisy = {p for p in a.keys() | a_again.keys() if p not in a or p not in a_again}
    noisy |= {p for p in a.keys() & a_again.keys() if not _same(a[p], a_again[p], rel_tol, abs_tol)}
    differences: list[FieldDiff] = []
    compared = 0
    # The source's own order, then the target's extras: reads like the job's output.
    for path, value in a.items():
        if path in noisy:
            continue
        compared += 1
        if path not in target:
            differences.append(FieldDiff(path, value, None, "missing"))
        elif not _same(value, target[path], rel_tol, abs_tol):
            differences.append(FieldDiff(path, value, target[path]))
    for path, value in target.items():
        if path in noisy or path in a:
            continue
        compared += 1
        differences.append(FieldDiff(path, None, value, "extra"))
    return ShadowComparison(
        job=job_name,
        non_deterministic=sorted(noisy),
        differences=differences,
        fields_compared=compared,
        rel_tol=rel_tol,
        abs_tol=abs_tol,
    )


def _same(left: Scalar, right: Scalar, rel_tol: float, abs_tol: float) -> bool:
    # bool is an int to Python, but True is not 1 in a result; nor is "3" equal to 3.
    if (
        isinstance(left, bool)
        or isinstance(right, bool)
        or not (isinstance(left, int | float) and isinstance(right, int | float))
    ):
        return type(left) is type(right) and left == right
    return numbers_match(left, right, rel_tol, abs_tol)


# --- running ----------------------------------------------------------------------


def run_shadow(
    jobs: Sequence[tuple[str, ShadowJobFn]],
    source: DatasetReader,
    target: DatasetReader,
    *,
    rel_tol: float = 0.0,
    abs_tol: float = 0.0,
    propagate: tuple[type[BaseException], ...] = (),
) -> ShadowReport:
    """Run each job on the source, on the source again (A/A), then on the target.

    A job that raises is reported as that job's failure, with the exception's last
    traceback line and where it was raised; the other jobs still run. Exceptions of the
    types in ``propagate`` are re-raised instead: the Airflow glue passes its task
    timeout there, so that a timeout stops the task rather than being filed as one
    job's failure while the others carry on past the deadline.
    """
    check_tolerances(rel_tol, abs_tol)
    check_unique_names(name for name, _ in jobs)
    comparisons: list[ShadowComparison] = []
    for name, job in jobs:
        durations: dict[str, float] = {}
        try:
            a = _run_once(job, "source", source, durations, propagate)
            a_again = _run_once(job, "source_again", source, durations, propagate)
            b = _run_once(job, "target", target, durations, propagate)
        except RunFailed as failure:
            error, location = last_error_line(failure.exc), _raised_at(failure.exc)
            comparisons.append(
                ShadowComparison.of_failure(name, failure, error, rel_tol, abs_tol, durations, error_location=location)
            )
            continue
        comparison = _compare_flat(name, a, a_again, b, rel_tol, abs_tol)
        comparisons.append(dataclasses.replace(comparison, durations_s=durations))
    return ShadowReport(comparisons)


def _run_once(
    job: ShadowJobFn,
    run_name: RunName,
    reader: DatasetReader,
    durations: dict[str, float],
    propagate: tuple[type[BaseException], ...],
) -> dict[str, Scalar]:
    with timed(run_name, durations):
        try:
            # Flattened here so a malformed result is charged to the run that produced it.
            return flatten(job(reader))
        except propagate:
            raise
        except Exception as exc:
            raise RunFailed(run_name, exc) from exc


def _raised_at(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
