"""Great Expectations gates of an object-store workload: parity and content suites.

Two kinds of gate run here, both on pandas frames through an ephemeral GX 1.x
context (:mod:`bascule.validation.gx`), and both reported in Bascule's own small,
JSON-able shape (:class:`~bascule.validation.outcomes.SuiteOutcome`) rather than GX's
result objects:

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

:func:`bascule.validation.report.render_report_html` turns the outcomes into the
approver's offline page. GX and pandas are imported lazily, by the functions that
need them. Nothing here imports Airflow.

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
import io
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bascule.validation import gx
from bascule.validation.outcomes import BASCULE_ENGINE, MAX_LISTED, ExpectationOutcome, SuiteOutcome, jsonable
from bascule.validation.suites import SuiteConfigError, SuiteProblems, read_suite_file

if TYPE_CHECKING:
    import pandas as pd


# --- running a suite on a frame --------------------------------------------------------


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
    bad kwargs raise :class:`~bascule.validation.suites.SuiteConfigError` naming the suite and expectation,
    before anything is validated.

    Offending rows are identified by the frame's index: a *named* index (e.g.
    ``key`` in the parity frame) is reported as is; a positional index is passed
    through ``row_label`` when given (content tables map it to ``object:line``).
    ``extra_results`` (checks computed outside GX) are appended to the outcome.
    """
    built = gx.build_expectations(name, expectations)
    index_name = frame.index.name if isinstance(frame.index.name, str) else None
    with gx.GX_LOCK:
        context = gx.ephemeral_context()
        asset = context.data_sources.add_pandas("bascule").add_dataframe_asset(gx.asset_name(name, table))
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
        by_index = gx.validate(batch, gx.expectation_suite(gx.asset_name(name, table), built), gx.summary_format())

    def row_id(entry: Any) -> str:
        if isinstance(entry, Mapping):
            return str(jsonable(entry.get(index_name) if index_name else None))
        if row_label is not None and isinstance(entry, numbers.Integral) and not isinstance(entry, bool):
            return row_label(int(entry))
        return str(jsonable(entry))

    outcomes = [gx.expectation_outcome(spec, by_index.get(i), row_id) for i, spec in enumerate(expectations)]
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


# A frame of 50,000 parity rows is ~15 MB with GX's working copies: bounded memory at
# any object count, and few enough GX runs (one per 50,000 objects) to stay cheap.
PARITY_BATCH_ROWS = 50_000


def run_parity_streamed(
    comparison_rows: Iterable[Mapping[str, Any]], *, batch_rows: int = PARITY_BATCH_ROWS
) -> SuiteOutcome:
    """:func:`run_parity` over consecutive batches of ``batch_rows``, merged into one outcome.

    Memory holds one batch. The merged outcome counts every row and every unexpected
    one, and names the first :data:`MAX_LISTED` per expectation, as one frame would.
    A key repeated across batches is not detected here: the rows come from a
    merge-join, which refuses a repeated key itself.
    """
    merged: SuiteOutcome | None = None
    batch: list[Mapping[str, Any]] = []
    for row in comparison_rows:
        batch.append(row)
        if len(batch) >= batch_rows:
            merged = _merge_outcomes(merged, run_parity(batch))
            batch = []
    if batch or merged is None:
        merged = _merge_outcomes(merged, run_parity(batch))
    return merged


def _merge_outcomes(before: SuiteOutcome | None, batch: SuiteOutcome) -> SuiteOutcome:
    if before is None:
        return batch
    results = [_merge_expectation(a, b) for a, b in zip(before.results, batch.results, strict=True)]
    failed = sum(1 for r in results if not r.success)
    return dataclasses.replace(
        before,
        success=failed == 0,
        failed=failed,
        results=results,
        rows=(before.rows or 0) + (batch.rows or 0),
    )


def _merge_expectation(a: ExpectationOutcome, b: ExpectationOutcome) -> ExpectationOutcome:
    def total(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return dataclasses.replace(
        a,
        success=a.success and b.success,
        element_count=total(a.element_count, b.element_count),
        unexpected_count=total(a.unexpected_count, b.unexpected_count),
        observed=a.observed if a.observed is not None else b.observed,
        unexpected_values=(a.unexpected_values + b.unexpected_values)[:MAX_LISTED],
        unexpected_ids=(a.unexpected_ids + b.unexpected_ids)[:MAX_LISTED],
        error=a.error or b.error,
    )


# --- content suites as data ----------------------------------------------------

COLUMN_TYPES = ("string", "integer", "number", "date")
_SUITE_FIELDS = {"suite", "description", "tables"}
_TABLE_FIELDS = {"name", "keys", "format", "expectations", "row_count", "types"}
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
    data = read_suite_file(p, "content suite")
    if not isinstance(data, dict):
        raise SuiteConfigError(f"content suite {p}: top level must be a mapping")
    problems = SuiteProblems()
    unknown = set(data) - _SUITE_FIELDS
    problems.need(not unknown, f"unknown top-level field(s): {sorted(unknown)}")
    name = data.get("suite")
    problems.need(isinstance(name, str) and bool(name), "'suite' must be a non-empty string")
    tables_raw: Any = data.get("tables")
    tables: list[TableSpec] = []
    if problems.need(isinstance(tables_raw, list) and bool(tables_raw), "'tables' must be a non-empty list"):
        seen: set[str] = set()
        for i, raw in enumerate(tables_raw):
            table = _table_spec(problems, i, raw, seen)
            if table is not None:
                tables.append(table)
    problems.raise_if_any(f"content suite {p}")
    return ContentSuite(name=str(name), tables=tables, description=str(data.get("description") or ""), path=str(p))


def _table_spec(problems: SuiteProblems, i: int, t: Any, seen: set[str]) -> TableSpec | None:
    """``tables[i]`` of a content suite; None once the suite has a problem (recorded in ``problems``)."""
    if not problems.need(isinstance(t, dict), f"tables[{i}] must be a mapping"):
        return None
    where = f"tables[{i}] ({t.get('name', '?')})"
    unknown = set(t) - _TABLE_FIELDS
    problems.need(not unknown, f"{where}: unknown field(s) {sorted(unknown)}")
    tname, keys, fmt = t.get("name"), t.get("keys"), t.get("format", "csv")
    problems.need(isinstance(tname, str) and bool(tname), f"{where}.name must be a non-empty string")
    problems.need(tname not in seen, f"{where}.name repeats an earlier table")
    seen.add(str(tname))
    problems.need(isinstance(keys, str) and bool(keys), f"{where}.keys must be a glob string")
    problems.need(fmt == "csv", f"{where}.format must be 'csv' (got {fmt!r})")
    row_count = t.get("row_count")
    problems.need(row_count in (None, "source"), f"{where}.row_count must be 'source' or absent (got {row_count!r})")
    types = t.get("types") or {}
    if problems.need(isinstance(types, dict), f"{where}.types must be a mapping column -> type"):
        for col, typ in types.items():
            problems.need(typ in COLUMN_TYPES, f"{where}.types.{col} must be one of {COLUMN_TYPES} (got {typ!r})")
    exps = t.get("expectations") or []
    problems.check_expectations(where, exps, kwargs_mapping=True)
    if problems:  # the suite is refused: building the spec could trip over the wrong shapes
        return None
    return TableSpec(
        name=tname,
        keys=keys,
        format=fmt,
        expectations=[dict(e) for e in exps],
        row_count=row_count,
        types={str(k): str(v) for k, v in types.items()},
    )


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
        gx.build_expectations(f"{suite.name}/{table.name}", table.expectations)
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


