"""Great Expectations gates for the validation phase: parity and content suites.

Two kinds of gate run here, both on pandas frames through an ephemeral GX 1.x
context, and both reported in Bascule's own small, JSON-able shape
(:class:`SuiteOutcome`) rather than GX's result objects:

* **parity** — one row per object from the source/target comparison
  (:func:`parity_frame`, :data:`PARITY_EXPECTATIONS`): nothing missing, nothing
  extra, sizes and hashes equal, target bytes verified. A failure names the
  offending object keys (the frame is indexed by key).
* **content** — suites kept as data in ``include/expectations/*.yaml``
  (:func:`load_content_suite`, :func:`run_content_suite`): per table, the
  target's CSV objects are read into one frame and checked (schema, identifiers,
  code formats, date ranges...), and the row count is compared with the
  source's. A failure names the column, the first offending values and the
  ``object-key:line`` where they sit.

:func:`render_report_html` turns outcomes into one self-contained HTML page for
an approver (no script, no remote stylesheet or font: audit rooms are offline).

GX is heavy (~4.5 s and ~280 MB to import): it is imported lazily, by the
functions that need it, after its chatty loggers are quietened. Nothing here
imports Airflow.

Memory: a content table is validated as one frame, so the peak is about that
table's frame (all its target objects, as strings) plus one object's bytes plus
GX's working copies. Split a big table into several table entries (e.g. one
glob per year) to bound it. Source row counts are streamed, one object at a
time, without building a frame.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
import html
import io
import logging
import math
import numbers
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bascule.exceptions import BasculeError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MAX_LISTED = 20  # offending values / identifiers kept per expectation
_RESULT_FORMAT: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_LISTED}
_GX_LOCK = threading.Lock()  # GX keeps a process-wide "current project"; validate one suite at a time
# Raised to WARNING unless already configured (a level other than NOTSET is respected).
# The parent covers, at INFO: "Created temporary directory ... for ephemeral docs site",
# "Loading 'datasources'", and two "_get_default_value called with key 'row_condition'"
# lines per expectation; the children are the worst offenders, in case the parent is
# set to INFO on purpose.
_QUIET_LOGGERS = (
    "great_expectations",
    "great_expectations._docs_decorators",  # ~216 "Skipping registering function" lines after Airflow
    "great_expectations.expectations.registry",  # "Multiple declarations of metric ..."
    "great_expectations.expectations.expectation",  # "_get_default_value called with key ..."
)
# pandas warns when a regex has capture groups (GX uses str.contains): not a data problem.
_IGNORED_WARNING = "This pattern is interpreted as a regular expression, and has match groups"
BASCULE_ENGINE = "bascule"
GX_ENGINE = "great_expectations"


class SuiteConfigError(BasculeError, ValueError):
    """A suite definition is wrong (unknown expectation, bad kwargs, malformed YAML).

    Retrying cannot help: fix the suite file or the caller. The message names the
    suite (and file) and the expectation or field at fault.
    """


# --- outcomes ----------------------------------------------------------------


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
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.kwargs.items())
        return f"{self.expectation}({params})"

    def detail(self, id_name: str = "row") -> str:
        """What went wrong, with the first offending values and where they are."""
        if self.error:
            return f"could not be evaluated: {self.error}"
        parts: list[str] = []
        if self.unexpected_count is not None:
            total = f" of {self.element_count}" if self.element_count is not None else ""
            parts.append(f"{self.unexpected_count}{total} rows unexpected")
        elif self.observed is not None:
            parts.append(f"observed {_short(self.observed, 200)}")
        if self.unexpected_values:
            parts.append("values " + ", ".join(_short(v) for v in self.unexpected_values[:5]))
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


# --- running a suite -----------------------------------------------------------


def run_suite(
    name: str,
    frame: pd.DataFrame,
    expectations: Sequence[Mapping[str, Any]],
    *,
    table: str | None = None,
    row_label: Callable[[int], str] | None = None,
    extra_results: Sequence[ExpectationOutcome] = (),
) -> SuiteOutcome:
    """Validate ``frame`` against ``expectations`` and return Bascule's outcome.

    Each spec is ``{"expectation": "<snake_case GX name>", "kwargs": {...}}``,
    optionally with ``"description"`` (shown beside failures). Unknown names or
    bad kwargs raise :class:`SuiteConfigError` naming the suite and expectation,
    before anything is validated.

    Offending rows are identified by the frame's index: a *named* index (e.g.
    ``key`` in the parity frame) is reported as is; a positional index is passed
    through ``row_label`` when given (content tables map it to ``object:line``).
    ``extra_results`` (checks computed outside GX) are appended to the outcome.
    """
    built = build_expectations(name, expectations)
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    index_name = frame.index.name if isinstance(frame.index.name, str) else None
    with _GX_LOCK:
        # A fresh ephemeral context costs ~30 ms (measured) and holds the batch: not
        # worth caching, and dropping it releases the frame's copies.
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("bascule").add_dataframe_asset(_asset_name(name, table))
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=_asset_name(name, table))
        for expectation in built:
            suite.add_expectation(expectation)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_IGNORED_WARNING, category=UserWarning)
            validation = batch.validate(suite, result_format=dict(_RESULT_FORMAT))

    by_index: dict[int, Any] = {}
    for result in validation.results:
        meta = result.expectation_config.meta or {}
        by_index[int(meta["bascule_index"])] = result
    outcomes = [
        _convert(spec, by_index.get(i), index_name=index_name, row_label=row_label)
        for i, spec in enumerate(expectations)
    ]
    outcomes.extend(extra_results)
    failed = sum(1 for o in outcomes if not o.success)
    return SuiteOutcome(
        suite=name,
        table=table,
        success=failed == 0,
        evaluated=len(outcomes),
        failed=failed,
        results=outcomes,
        rows=len(frame),
        id_name=index_name or ("object:line" if row_label else "row"),
    )


def build_expectations(suite: str, specs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """GX expectation objects for ``specs``; raises :class:`SuiteConfigError` on any bad one."""
    classes = _expectation_classes()
    built: list[Any] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("expectation"), str):
            raise SuiteConfigError(f"suite '{suite}': expectation #{i + 1} needs an 'expectation' name, got {spec!r}")
        exp_name = spec["expectation"]
        cls = classes.get(exp_name)
        if cls is None:
            close = [n for n in classes if n.split("_to_")[0] == exp_name.split("_to_")[0]][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SuiteConfigError(
                f"suite '{suite}': unknown expectation '{exp_name}' (#{i + 1}); "
                f"not a Great Expectations {_gx_version()} core expectation{hint}"
            )
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise SuiteConfigError(f"suite '{suite}': expectation '{exp_name}' (#{i + 1}): kwargs must be a mapping")
        try:
            built.append(cls(**dict(kwargs), meta={"bascule_index": i}))
        except Exception as exc:  # pydantic.ValidationError and friends
            raise SuiteConfigError(
                f"suite '{suite}': expectation '{exp_name}' (#{i + 1}) has invalid kwargs {dict(kwargs)!r}: {exc}"
            ) from exc
    return built


def _convert(
    spec: Mapping[str, Any],
    result: Any,
    *,
    index_name: str | None,
    row_label: Callable[[int], str] | None,
) -> ExpectationOutcome:
    exp_name = str(spec["expectation"])
    kwargs = _jsonable(dict(spec.get("kwargs") or {}))
    description = spec.get("description")
    if result is None:  # GX returned no result for it: never count that as a pass
        return ExpectationOutcome(exp_name, kwargs, False, description, error="no result returned by GX")
    res: dict[str, Any] = dict(result.result or {})
    error = _exception_message(result.exception_info)
    ids: list[str] = []
    for entry in (res.get("partial_unexpected_index_list") or [])[:MAX_LISTED]:
        if isinstance(entry, Mapping):
            value = entry.get(index_name) if index_name else None
            ids.append(str(_jsonable(value)))
        elif row_label is not None and isinstance(entry, numbers.Integral) and not isinstance(entry, bool):
            ids.append(row_label(int(entry)))
        else:
            ids.append(str(_jsonable(entry)))
    observed = res.get("observed_value")
    return ExpectationOutcome(
        expectation=exp_name,
        kwargs=kwargs,
        success=bool(result.success) and error is None,
        description=description,
        element_count=_int_or_none(res.get("element_count")),
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        observed=None if observed is None else _jsonable(observed),
        unexpected_values=[_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:MAX_LISTED]],
        unexpected_ids=ids,
        error=error,
    )


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for value in info.values():  # keyed by metric id when a metric failed
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


# --- parity ------------------------------------------------------------------

PARITY_SUITE = "parity"
PARITY_COLUMNS = (
    "in_source",
    "in_target",
    "source_size",
    "target_size",
    "source_md5",
    "target_md5",
    "verified",
)

# Each object fails under its most specific reason: a missing/extra object is not
# also reported as a size, hash or verification mismatch (those are compared only
# where both sides have a value; ``verified`` is null unless the object is on both
# sides). A hash absent on one side (Azure blobs built from blocks often have no
# Content-MD5) is not a mismatch: ``verified`` carries the proof.
PARITY_EXPECTATIONS: list[dict[str, Any]] = [
    {
        "expectation": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "in_target", "value_set": [True]},
        "description": "missing on target",
    },
    {
        "expectation": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "in_source", "value_set": [True]},
        "description": "extra on target (not in the source inventory)",
    },
    {
        "expectation": "expect_column_pair_values_to_be_equal",
        "kwargs": {"column_A": "source_size", "column_B": "target_size", "ignore_row_if": "either_value_is_missing"},
        "description": "size differs",
    },
    {
        "expectation": "expect_column_pair_values_to_be_equal",
        "kwargs": {"column_A": "source_md5", "column_B": "target_md5", "ignore_row_if": "either_value_is_missing"},
        "description": "Content-MD5 differs",
    },
    {
        "expectation": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "verified", "value_set": [True]},
        "description": "target bytes not proven equal to the source hash",
    },
]


def parity_frame(comparison_rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per object, indexed by ``key``, typed for :data:`PARITY_EXPECTATIONS`.

    Each input row has ``key``, ``in_source``, ``in_target``, ``source_size``,
    ``target_size``, ``source_md5``, ``target_md5`` (base64 or None) and
    ``verified``. ``verified`` is recorded as null (not applicable) unless the
    object is on both sides. A key listed twice raises ``ValueError``: the
    comparison must name each object once.
    """
    import pandas as pd

    keys: list[str] = []
    cols: dict[str, list[Any]] = {c: [] for c in PARITY_COLUMNS}
    seen: set[str] = set()
    for row in comparison_rows:
        key = str(row["key"])
        if key in seen:
            raise ValueError(f"parity: object key listed twice in the comparison: {key!r}")
        seen.add(key)
        keys.append(key)
        in_source, in_target = bool(row["in_source"]), bool(row["in_target"])
        cols["in_source"].append(in_source)
        cols["in_target"].append(in_target)
        for name in ("source_size", "target_size"):
            value = row.get(name)
            cols[name].append(None if value is None else int(value))
        for name in ("source_md5", "target_md5"):
            value = row.get(name)
            cols[name].append(value or None)
        cols["verified"].append(bool(row.get("verified")) if in_source and in_target else None)
    return pd.DataFrame(
        {
            "in_source": pd.array(cols["in_source"], dtype="bool"),
            "in_target": pd.array(cols["in_target"], dtype="bool"),
            "source_size": pd.array(cols["source_size"], dtype="Int64"),
            "target_size": pd.array(cols["target_size"], dtype="Int64"),
            "source_md5": pd.array(cols["source_md5"], dtype="object"),
            "target_md5": pd.array(cols["target_md5"], dtype="object"),
            "verified": pd.array(cols["verified"], dtype="boolean"),
        },
        index=pd.Index(keys, name="key", dtype="object"),
    )


def run_parity(comparison_rows: Iterable[Mapping[str, Any]]) -> SuiteOutcome:
    """:func:`run_suite` of :data:`PARITY_EXPECTATIONS` over :func:`parity_frame`."""
    return run_suite(PARITY_SUITE, parity_frame(comparison_rows), PARITY_EXPECTATIONS)


# --- content suites as data ----------------------------------------------------

EXPECTATIONS_DIR = Path(__file__).resolve().parents[1] / "expectations"
COLUMN_TYPES = ("string", "integer", "number", "date")
_INTEGER = r"[+-]?[0-9]+"


@dataclass(frozen=True)
class TableSpec:
    """One table of a content suite: which objects, how to read them, what to expect."""

    name: str
    keys: str  # glob over object keys relative to the dataset prefix; ``**`` crosses "/"
    expectations: list[dict[str, Any]]
    format: str = "csv"
    row_count: str | None = None  # "source": the target's row count must equal the source's
    types: dict[str, str] = field(default_factory=dict)  # column -> integer | number | date (else string)

    def matches(self, key: str) -> bool:
        return _glob_regex(self.keys).fullmatch(key) is not None


@dataclass(frozen=True)
class ContentSuite:
    name: str
    tables: list[TableSpec]
    description: str = ""
    path: str | None = None


def load_content_suite(path: str | Path) -> ContentSuite:
    """Read a content suite YAML file (see ``include/expectations/``).

    Shape::

        suite: <name>
        description: <text>
        tables:
          - name: <table>
            keys: "<glob>"            # e.g. "stays/**/*.csv"
            format: csv               # the only format for now
            types: {col: date|integer|number}   # optional; others stay strings
            row_count: source         # optional
            expectations:
              - expectation: <snake_case GX name>
                kwargs: {...}
                description: <text>   # optional

    Structure errors raise :class:`SuiteConfigError` naming the file and field;
    expectation names and kwargs are checked by :func:`run_content_suite`
    before any object is read (that needs GX).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteConfigError(f"content suite {p}: cannot read: {exc}") from exc
    problems: list[str] = []

    def need(cond: bool, msg: str) -> bool:
        if not cond:
            problems.append(msg)
        return cond

    if not need(isinstance(data, dict), "top level must be a mapping"):
        raise SuiteConfigError(f"content suite {p}: " + "; ".join(problems))
    unknown = set(data) - {"suite", "description", "tables"}
    need(not unknown, f"unknown top-level field(s): {sorted(unknown)}")
    name = data.get("suite")
    need(isinstance(name, str) and bool(name), "'suite' must be a non-empty string")
    tables_raw = data.get("tables")
    tables: list[TableSpec] = []
    if need(isinstance(tables_raw, list) and bool(tables_raw), "'tables' must be a non-empty list"):
        seen: set[str] = set()
        for i, t in enumerate(tables_raw):
            where = f"tables[{i}]"
            if not need(isinstance(t, dict), f"{where} must be a mapping"):
                continue
            where = f"tables[{i}] ({t.get('name', '?')})"
            unknown = set(t) - {"name", "keys", "format", "expectations", "row_count", "types"}
            need(not unknown, f"{where}: unknown field(s) {sorted(unknown)}")
            tname, keys, fmt = t.get("name"), t.get("keys"), t.get("format", "csv")
            need(isinstance(tname, str) and bool(tname), f"{where}.name must be a non-empty string")
            need(tname not in seen, f"{where}.name repeats an earlier table")
            seen.add(str(tname))
            need(isinstance(keys, str) and bool(keys), f"{where}.keys must be a glob string")
            need(fmt == "csv", f"{where}.format must be 'csv' (got {fmt!r})")
            row_count = t.get("row_count")
            need(row_count in (None, "source"), f"{where}.row_count must be 'source' or absent (got {row_count!r})")
            types = t.get("types") or {}
            if need(isinstance(types, dict), f"{where}.types must be a mapping column -> type"):
                for col, typ in types.items():
                    need(typ in COLUMN_TYPES, f"{where}.types.{col} must be one of {COLUMN_TYPES} (got {typ!r})")
            exps = t.get("expectations") or []
            if need(isinstance(exps, list), f"{where}.expectations must be a list"):
                for j, e in enumerate(exps):
                    ok = isinstance(e, dict) and isinstance(e.get("expectation"), str)
                    if need(ok, f"{where}.expectations[{j}] needs an 'expectation' name"):
                        extra = set(e) - {"expectation", "kwargs", "description"}
                        need(not extra, f"{where}.expectations[{j}]: unknown field(s) {sorted(extra)}")
                        need(
                            isinstance(e.get("kwargs", {}), dict),
                            f"{where}.expectations[{j}].kwargs must be a mapping",
                        )
            if not problems:
                tables.append(
                    TableSpec(
                        name=tname,
                        keys=keys,
                        format=fmt,
                        expectations=[dict(e) for e in exps],
                        row_count=row_count,
                        types={str(k): str(v) for k, v in types.items()},
                    )
                )
    if problems:
        raise SuiteConfigError(f"content suite {p}:\n" + "\n".join(f"  - {m}" for m in problems))
    return ContentSuite(name=str(name), tables=tables, description=str(data.get("description") or ""), path=str(p))


def run_content_suite(
    suite: ContentSuite,
    read_source: Callable[[str], bytes],
    read_target: Callable[[str], bytes],
    keys: Sequence[str],
) -> list[SuiteOutcome]:
    """Validate each table of ``suite`` on the target; one :class:`SuiteOutcome` per table.

    ``keys`` are the dataset's object keys (relative to its prefix); each table
    takes those matching its glob. The table's target objects are concatenated
    into one frame (strings, so codes like "2A" and leading zeros survive; empty
    fields are null); declared ``types`` are converted (values that do not
    parse are reported by a ``bascule_column_values_parse_as_type`` check). With
    ``row_count: source`` the source objects are stream-counted and
    ``expect_table_row_count_to_equal`` is added. Offending rows are named
    ``object-key:line``. A read error propagates (the parity gate reports
    missing objects; content validation assumes they are there).
    """
    # Check every expectation of every table before reading a byte.
    for table in suite.tables:
        build_expectations(f"{suite.name}/{table.name}", table.expectations)
    outcomes = []
    for table in suite.tables:
        selected = [k for k in keys if table.matches(k)]
        outcomes.append(_run_table(suite, table, selected, read_source, read_target))
    return outcomes


def _run_table(
    suite: ContentSuite,
    table: TableSpec,
    keys: list[str],
    read_source: Callable[[str], bytes],
    read_target: Callable[[str], bytes],
) -> SuiteOutcome:
    import pandas as pd

    if not keys:
        miss = ExpectationOutcome(
            "bascule_table_has_objects",
            {"keys": table.keys},
            False,
            "no object key matches the table's glob",
            observed=0,
            engine=BASCULE_ENGINE,
        )
        return SuiteOutcome(suite.name, False, 1, 1, [miss], table=table.name, rows=0, id_name="object:line")

    frames: list[pd.DataFrame] = []
    starts: list[int] = []
    headers: dict[tuple[str, ...], list[str]] = {}
    offset = 0
    for key in keys:
        part = pd.read_csv(
            io.BytesIO(read_target(key)),
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
        headers.setdefault(tuple(str(c) for c in part.columns), []).append(key)
        frames.append(part)
        starts.append(offset)
        offset += len(part)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    del frames

    def row_label(position: int) -> str:
        i = bisect.bisect_right(starts, position) - 1
        return f"{keys[i]}:{position - starts[i] + 2}"  # +1 for the header, +1 as lines count from 1

    extra: list[ExpectationOutcome] = []
    if len(headers) > 1:  # a file with another header would silently shift or null columns
        first = max(headers.values(), key=len)
        odd = [k for ks in headers.values() if ks is not first for k in ks]
        extra.append(
            ExpectationOutcome(
                "bascule_objects_share_header",
                {"keys": table.keys},
                False,
                "every object of the table has the same header",
                observed=[list(h) for h in headers][:MAX_LISTED],
                unexpected_count=len(odd),
                unexpected_ids=odd[:MAX_LISTED],
                engine=BASCULE_ENGINE,
            )
        )
    for column, typ in table.types.items():
        if column in frame.columns and typ != "string":
            extra.append(_convert_column(frame, column, typ, row_label))

    expectations = list(table.expectations)
    if table.row_count == "source":
        source_rows = sum(count_csv_rows(read_source(k)) for k in keys)
        expectations.append(
            {
                "expectation": "expect_table_row_count_to_equal",
                "kwargs": {"value": source_rows},
                "description": f"row count equals the source's ({source_rows} rows in {len(keys)} objects)",
            }
        )
    return run_suite(suite.name, frame, expectations, table=table.name, row_label=row_label, extra_results=extra)


def _convert_column(frame: pd.DataFrame, column: str, typ: str, row_label: Callable[[int], str]) -> ExpectationOutcome:
    """Convert ``frame[column]`` in place to ``typ``; report the values that do not parse."""
    import pandas as pd

    raw = frame[column]
    present = raw.notna()
    if typ == "date":
        parsed = pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")
        bad = present & parsed.isna()
        converted = pd.Series([None if pd.isna(v) else v.date() for v in parsed], index=frame.index, dtype="object")
    else:
        if typ == "integer":
            shaped = raw.str.fullmatch(_INTEGER).fillna(False).astype(bool)
            numbers = pd.to_numeric(raw.where(shaped), errors="coerce")
            converted = numbers.astype("Int64")
        else:
            numbers = pd.to_numeric(raw, errors="coerce")
            converted = numbers.astype("Float64")
        bad = present & numbers.isna()
    positions = [int(i) for i in bad.to_numpy().nonzero()[0]]
    outcome = ExpectationOutcome(
        "bascule_column_values_parse_as_type",
        {"column": column, "type": typ},
        not positions,
        f"every non-null {column} parses as {typ}"
        + (" (YYYY-MM-DD)" if typ == "date" else "")
        + "; values that do not are null for the other checks",
        element_count=len(frame),
        unexpected_count=len(positions),
        unexpected_values=[str(raw.iloc[i]) for i in positions[:MAX_LISTED]],
        unexpected_ids=[row_label(i) for i in positions[:MAX_LISTED]],
        engine=BASCULE_ENGINE,
    )
    frame[column] = converted
    return outcome


def count_csv_rows(body: bytes, encoding: str = "utf-8") -> int:
    """Data records in a CSV object (header and blank lines excluded), streamed.

    Uses the csv module, so a quoted field spanning lines counts once, as pandas
    would read it.
    """
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(body), encoding=encoding, newline=""))
    records = sum(1 for record in reader if record)
    return max(0, records - 1)


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch-like, path-aware: ``*``/``?`` stay within a segment, ``**`` crosses "/"."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" also matches no directory at all
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                body = "^" + body[1:] if body.startswith("!") else body
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


# --- HTML report ---------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2em;color:#1d2330;background:#fff}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .4em}
.verdict{display:inline-block;padding:.35em .9em;border-radius:4px;font-weight:700;font-size:1.1em;color:#fff}
.pass{background:#1e7b34}.fail{background:#b3261e}
.tag{display:inline-block;padding:0 .5em;border-radius:3px;font-weight:600;color:#fff;font-size:.85em}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
th,td{border:1px solid #d4d8e0;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f1f3f7}tr.failed td{background:#fdf0ef}
code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.muted{color:#5b6475}.ctx th{width:14em}
ul.ids{margin:0;padding-left:1.1em}
@media print{.verdict,.tag{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def render_report_html(title: str, outcomes: Sequence[SuiteOutcome], context: Mapping[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, no script, no remote asset) for an approver.

    Shows the overall verdict, the ``context`` (workload, run, prefixes...) and,
    per suite/table, every expectation with its verdict, parameters, observed
    value and the first offending values and keys. All text is escaped.
    """
    e = html.escape
    ok = all(o.success for o in outcomes) and bool(outcomes)
    failed_suites = sum(1 for o in outcomes if not o.success)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p><span class="verdict {"pass" if ok else "fail"}">{"PASSED" if ok else "FAILED"}</span> ',
        f'<span class="muted">{len(outcomes)} suite(s)/table(s), {failed_suites} failed; '
        f"{sum(o.evaluated for o in outcomes)} expectation(s), {sum(o.failed for o in outcomes)} failed</span></p>",
    ]
    if not outcomes:
        parts.append("<p><strong>No validation ran: nothing to approve.</strong></p>")
    if context:
        parts.append('<table class="ctx"><tbody>')
        for k, v in context.items():
            parts.append(f"<tr><th>{e(str(k))}</th><td><code>{e(_text(v))}</code></td></tr>")
        parts.append("</tbody></table>")
    for o in outcomes:
        parts.append(_suite_html(o))
    parts.append('<p class="muted">Generated by Bascule; offending values and identifiers are limited to the first ')
    parts.append(f"{MAX_LISTED} per expectation.</p></body></html>")
    return "\n".join(parts)


def _suite_html(o: SuiteOutcome) -> str:
    e = html.escape
    verdict = f'<span class="tag {"pass" if o.success else "fail"}">{"PASS" if o.success else "FAIL"}</span>'
    rows = "" if o.rows is None else f", {o.rows} rows"
    out = [
        f"<h2>{verdict} {e(o.label)}</h2>",
        f'<p class="muted">{o.evaluated} expectation(s), {o.failed} failed{rows}</p>',
        "<table><thead><tr><th>Result</th><th>Expectation</th><th>Parameters</th><th>Observed</th>"
        f"<th>Offending values</th><th>Offending {e(o.id_name)}</th></tr></thead><tbody>",
    ]
    for r in o.results:
        tag = f'<span class="tag {"pass" if r.success else "fail"}">{"pass" if r.success else "FAIL"}</span>'
        name = f"<code>{e(r.expectation)}</code>"
        if r.description:
            name += f'<br><span class="muted">{e(r.description)}</span>'
        params = "<br>".join(f"<code>{e(k)}={e(_short(v, 300))}</code>" for k, v in r.kwargs.items())
        if r.error:
            observed = f"<strong>error:</strong> {e(r.error)}"
        elif r.unexpected_count is not None:
            total = f" of {r.element_count}" if r.element_count is not None else ""
            observed = f"{r.unexpected_count}{total} unexpected"
        elif r.observed is not None:
            observed = f"<code>{e(_short(r.observed, 500))}</code>"
        else:
            observed = ""
        values = ", ".join(f"<code>{e(_short(v))}</code>" for v in r.unexpected_values)
        ids = ""
        if r.unexpected_ids:
            ids = '<ul class="ids">' + "".join(f"<li><code>{e(i)}</code></li>" for i in r.unexpected_ids) + "</ul>"
            more = (r.unexpected_count or 0) - len(r.unexpected_ids)
            if more > 0:
                ids += f'<span class="muted">+{more} more</span>'
        css = "" if r.success else ' class="failed"'
        out.append(
            f"<tr{css}><td>{tag}</td><td>{name}</td><td>{params}</td><td>{observed}</td><td>{values}</td><td>{ids}</td></tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


# --- helpers -----------------------------------------------------------------


def _quiet_gx_loggers() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


@functools.cache
def _gx() -> Any:
    """Import great_expectations once, quietly (~4.5 s, ~280 MB the first time)."""
    _quiet_gx_loggers()
    import great_expectations as gx

    # This module forces its own logger to INFO at import (one line per context).
    forced = logging.getLogger("great_expectations.data_context.types.base")
    if forced.level == logging.INFO:
        forced.setLevel(logging.WARNING)
    return gx


def _gx_version() -> str:
    return str(getattr(_gx(), "__version__", "?"))


@functools.cache
def _expectation_classes() -> dict[str, type]:
    """snake_case name -> GX core expectation class (``expect_column_kl_divergence_...`` included)."""
    gx = _gx()
    from great_expectations.expectations.expectation import Expectation

    out: dict[str, type] = {}
    for attr in dir(gx.expectations):
        obj = getattr(gx.expectations, attr)
        if isinstance(obj, type) and issubclass(obj, Expectation) and attr.startswith("Expect"):
            out[str(obj.expectation_type)] = obj
    return out


def _asset_name(name: str, table: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}.{table}" if table else name)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A small JSON-able copy: numpy scalars unwrapped, NaN/NaT -> None, dates ISO, lists trimmed."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy scalar
        try:
            return _jsonable(item(), depth)
        except (ValueError, TypeError):
            pass
    if depth > 4:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:MAX_LISTED]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        trimmed = [_jsonable(v, depth + 1) for v in seq[:MAX_LISTED]]
        if len(seq) > MAX_LISTED:
            trimmed.append(f"... (+{len(seq) - MAX_LISTED} more)")
        return trimmed
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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _short(_jsonable(value), 2000)


def _short(value: Any, limit: int = 80) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = repr(value) if not isinstance(value, list | dict) else _compact(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)
