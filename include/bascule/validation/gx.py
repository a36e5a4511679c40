"""The Great Expectations engine, as both kinds of gate use it.

GX is heavy (~4.5 s and ~280 MB to import): it is imported lazily, once, by
:func:`import_gx`, after its chatty loggers are quietened, so that the DAG files that
import the domain never pay for it. Each gate builds an ephemeral context
(:func:`ephemeral_context`, under :data:`GX_LOCK`), validates batches with suites of
core expectations (:func:`build_expectations`, :func:`validate`) and turns each result
into an :class:`~bascule.validation.outcomes.ExpectationOutcome`
(:func:`outcome_of`, :func:`expectation_outcome`). Nothing here imports Airflow.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bascule.validation.outcomes import MAX_LISTED, ExpectationOutcome, jsonable
from bascule.validation.suites import SuiteConfigError

GX_LOCK = threading.Lock()  # GX keeps a process-wide "current project"; validate one suite at a time
NO_RESULT = "no result returned by GX"
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


def summary_format() -> dict[str, Any]:
    """GX's SUMMARY result format, keeping the first :data:`MAX_LISTED` offending values and rows."""
    return {"result_format": "SUMMARY", "partial_unexpected_count": MAX_LISTED}


@functools.cache
def import_gx() -> Any:
    """Import great_expectations once, quietly (~4.5 s, ~280 MB the first time)."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    import great_expectations as gx

    # This module forces its own logger to INFO at import (one line per context).
    forced = logging.getLogger("great_expectations.data_context.types.base")
    if forced.level == logging.INFO:
        forced.setLevel(logging.WARNING)
    return gx


def ephemeral_context() -> Any:
    """A fresh ephemeral GX context without progress bars; call it holding :data:`GX_LOCK`.

    A context costs ~30 ms (measured) and holds the batches: not worth caching, and
    dropping it releases the data's copies.
    """
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def asset_name(suite: str, table: str | None) -> str:
    """A GX asset/suite name for ``suite`` (and ``table``): anything but ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{suite}.{table}" if table else suite)


def expectation_suite(name: str, expectations: Sequence[Any]) -> Any:
    """A GX ExpectationSuite named ``name`` holding the built ``expectations``."""
    suite = import_gx().ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def validate(batch: Any, suite: Any, result_format: Mapping[str, Any]) -> dict[int, Any]:
    """Validate ``batch`` with ``suite``; each result keyed by its expectation's ``bascule_index``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_IGNORED_WARNING, category=UserWarning)
        validation = batch.validate(suite, result_format=dict(result_format))
    return {int((r.expectation_config.meta or {})["bascule_index"]): r for r in validation.results}


def build_expectations(suite: str, specs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """GX expectation objects for ``specs``; raises :class:`SuiteConfigError` on any bad one.

    Each spec is ``{"expectation": "<snake_case GX name>", "kwargs": {...}}``; the
    expectation built from ``specs[i]`` carries ``meta={"bascule_index": i}``.
    """
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


def outcome_of(
    expectation: str,
    kwargs: dict[str, Any],
    description: str | None,
    result: Any,
    measures: Callable[[dict[str, Any]], dict[str, Any]],
    scrub: Callable[[str], str] | None = None,
) -> ExpectationOutcome:
    """GX's verdict on one expectation, as Bascule records it.

    No result (GX returned none) fails, never passes; an expectation GX could not
    evaluate fails with its error, passed through ``scrub`` (e.g. of a password).
    ``measures`` picks from GX's result dict what the outcome shows: counts, observed
    value, offending values and rows (:class:`ExpectationOutcome` field names).
    """
    if result is None:
        return ExpectationOutcome(expectation, kwargs, False, description, error=NO_RESULT)
    res: dict[str, Any] = dict(result.result or {})
    error = _exception_message(result.exception_info)
    if error is not None and scrub is not None:
        error = scrub(error)
    success = bool(result.success) and error is None
    return ExpectationOutcome(expectation, kwargs, success, description, error=error, **measures(res))


def expectation_outcome(
    spec: Mapping[str, Any],
    result: Any,
    row_id: Callable[[Any], str | None],
    scrub: Callable[[str], str] | None = None,
) -> ExpectationOutcome:
    """:func:`outcome_of` a core expectation built from ``spec``, with GX's SUMMARY measures.

    ``row_id`` names one entry of GX's ``partial_unexpected_index_list`` (None leaves
    the entry out).
    """

    def measures(res: dict[str, Any]) -> dict[str, Any]:
        entries = (res.get("partial_unexpected_index_list") or [])[:MAX_LISTED]
        observed = res.get("observed_value")
        return {
            "element_count": int_or_none(res.get("element_count")),
            "unexpected_count": int_or_none(res.get("unexpected_count")),
            "observed": None if observed is None else jsonable(observed),
            "unexpected_values": [jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:MAX_LISTED]],
            "unexpected_ids": [shown for shown in (row_id(entry) for entry in entries) if shown is not None],
        }

    kwargs = jsonable(dict(spec.get("kwargs") or {}))
    return outcome_of(str(spec["expectation"]), kwargs, spec.get("description"), result, measures, scrub)


def int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for value in info.values():  # keyed by metric id when a metric failed
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


def _gx_version() -> str:
    return str(getattr(import_gx(), "__version__", "?"))


@functools.cache
def _expectation_classes() -> dict[str, type]:
    """snake_case name -> GX core expectation class (``expect_column_kl_divergence_...`` included)."""
    gx = import_gx()
    from great_expectations.expectations.expectation import Expectation

    out: dict[str, type] = {}
    for attr in dir(gx.expectations):
        obj = getattr(gx.expectations, attr)
        if isinstance(obj, type) and issubclass(obj, Expectation) and attr.startswith("Expect"):
            out[str(obj.expectation_type)] = obj
    return out
