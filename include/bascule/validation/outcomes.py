"""Bascule's own record of a gate's verdict, shared by the object and the table gates.

GX's result objects are large, version-specific and not JSON-able; a gate keeps only
what a person or an evidence file needs: per expectation, the verdict, its parameters,
the observed value and the first :data:`MAX_LISTED` offending values and rows
(:class:`ExpectationOutcome`), gathered per suite and table (:class:`SuiteOutcome`).
Nothing here imports GX or pandas.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

MAX_LISTED = 20  # offending values / identifiers kept per expectation
BASCULE_ENGINE = "bascule"
GX_ENGINE = "great_expectations"
_NOT_PLAIN = object()  # _plain_jsonable: "not a scalar it knows"


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, trimmed to what a person or an evidence file needs."""

    expectation: str  # snake_case GX name, or a ``bascule_*`` check computed here
    kwargs: dict[str, Any]  # JSON-able summary: column(s), regex, bounds, value set...
    success: bool
    description: str | None = None
    element_count: int | None = None  # rows looked at (map expectations)
    unexpected_count: int | None = None
    observed: Any = None  # observed value (table/aggregate expectations)
    unexpected_values: list[Any] = field(default_factory=list)  # first MAX_LISTED
    unexpected_ids: list[str] = field(default_factory=list)  # object keys or "object:line", first MAX_LISTED
    error: str | None = None  # the expectation could not be evaluated (e.g. missing column)
    engine: str = GX_ENGINE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "expectation": self.expectation,
            "kwargs": self.kwargs,
            "success": self.success,
        }
        for name in ("description", "element_count", "unexpected_count", "observed", "error"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.unexpected_values:
            out["unexpected_values"] = self.unexpected_values
        if self.unexpected_ids:
            out["unexpected_ids"] = self.unexpected_ids
        if self.engine != GX_ENGINE:
            out["engine"] = self.engine
        return out

    def headline(self) -> str:
        """``expectation(column=..., ...)``, short enough for a log line."""
        params = ", ".join(f"{k}={abbreviate(v)}" for k, v in self.kwargs.items())
        return f"{self.expectation}({params})"

    def detail(self, id_name: str = "row") -> str:
        """What went wrong, with the first offending values and where they are."""
        if self.error:
            return f"could not be evaluated: {self.error}"
        parts: list[str] = []
        if self.unexpected_count is not None:
            total = f" of {self.element_count}" if self.element_count is not None else ""
            parts.append(f"{self.unexpected_count}{total} rows unexpected")
        if self.observed is not None and self.observed != self.unexpected_count:
            parts.append(f"observed {abbreviate(self.observed, 200)}")
        if self.unexpected_values:
            parts.append("values " + ", ".join(abbreviate(v) for v in self.unexpected_values[:5]))
        if self.unexpected_ids:
            more = (self.unexpected_count or len(self.unexpected_ids)) - len(self.unexpected_ids)
            listed = ", ".join(self.unexpected_ids)
            parts.append(f"{id_name}: {listed}" + (f" (+{more} more)" if more > 0 else ""))
        return "; ".join(parts) or "failed"


@dataclass(frozen=True)
class SuiteOutcome:
    """A suite's verdict on one frame (the parity frame, or one content table)."""

    suite: str
    success: bool
    evaluated: int
    failed: int
    results: list[ExpectationOutcome]
    table: str | None = None  # content suites: the table checked
    rows: int | None = None  # rows in the frame validated
    id_name: str = "row"  # what ``unexpected_ids`` are: "key" for parity, "object:line" for content

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.table}" if self.table else self.suite

    def to_json(self) -> dict[str, Any]:
        """A small JSON-able record (at most MAX_LISTED values/ids per expectation)."""
        return {
            "suite": self.suite,
            "table": self.table,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": self.failed,
            "rows": self.rows,
            "id_name": self.id_name,
            "results": [r.to_json() for r in self.results],
        }

    def failure_summary(self) -> str:
        """One line per failed expectation (empty when the suite passed).

        Each line names the suite/table, the expectation and its column(s), the
        first offending values and where they are (object keys or object:line).
        """
        lines = []
        for r in self.results:
            if r.success:
                continue
            what = f" [{r.description}]" if r.description else ""
            lines.append(f"{self.label}: FAILED {r.headline()}{what}: {r.detail(self.id_name)}")
        return "\n".join(lines)


# --- JSON-able values ----------------------------------------------------------------


def jsonable(value: Any, depth: int = 0) -> Any:
    """A small JSON-able copy: numpy scalars unwrapped, NaN/NaT -> None, dates ISO, lists trimmed."""
    plain = _plain_jsonable(value, depth)
    if plain is not _NOT_PLAIN:
        return plain
    if depth > 4:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:MAX_LISTED]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        trimmed = [jsonable(v, depth + 1) for v in seq[:MAX_LISTED]]
        if len(seq) > MAX_LISTED:
            trimmed.append(f"... (+{len(seq) - MAX_LISTED} more)")
        return trimmed
    return _other_jsonable(value)


def _plain_jsonable(value: Any, depth: int) -> Any:
    """Python and numpy scalars as JSON values; :data:`_NOT_PLAIN` for anything else."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy scalar
        try:
            return jsonable(item(), depth)
        except (ValueError, TypeError):
            pass
    return _NOT_PLAIN


def _other_jsonable(value: Any) -> Any:
    """pandas' missing values as None, its timestamps ISO, anything else as its text."""
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    isoformat = getattr(value, "isoformat", None)  # pandas Timestamp
    if callable(isoformat):
        return str(isoformat())
    return str(value)


def abbreviate(value: Any, limit: int = 80) -> str:
    """``value`` as short text for a log line or a report cell: strings quoted, JSON for lists and dicts."""
    if value is None:
        text = "null"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = repr(value) if not isinstance(value, list | dict) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
