"""Suites as data: what the content suites and the table suites share when a file is read.

Both kinds live in ``include/expectations/*.yaml`` and are checked the same way: every
structural problem of a file is collected (:class:`SuiteProblems`) and reported in one
:class:`SuiteConfigError` naming the file and the field, so an author fixes them all in
one pass. Expectation names and kwargs are checked against GX later, by
:func:`bascule.validation.gx.build_expectations`, before any data is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bascule.exceptions import BasculeError

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
_EXPECTATION_FIELDS = {"expectation", "kwargs", "description"}


class SuiteConfigError(BasculeError, ValueError):
    """A suite definition is wrong (unknown expectation, bad kwargs, malformed YAML).

    Retrying cannot help: fix the suite file or the caller. The message names the
    suite (and file) and the expectation or field at fault.
    """


def read_suite_file(path: Path, kind: str) -> Any:
    """The YAML document at ``path``; an unreadable or malformed file names ``kind`` and the path."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteConfigError(f"{kind} {path}: cannot read: {exc}") from exc


class SuiteProblems:
    """The structural problems found in one suite, raised together by :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, message: str) -> None:
        self.messages.append(message)

    def need(self, condition: bool, message: str) -> bool:
        """Record ``message`` unless ``condition`` holds; return ``condition`` so a caller can skip deeper checks."""
        if not condition:
            self.messages.append(message)
        return condition

    def raise_if_any(self, where: str) -> None:
        if self.messages:
            raise SuiteConfigError(f"{where}:\n" + "\n".join(f"  - {m}" for m in self.messages))

    def check_expectations(self, where: str, expectations: Any, *, kwargs_mapping: bool = False) -> None:
        """Check a list of ``{expectation, kwargs, description}`` entries found at ``where``.

        ``kwargs_mapping`` also requires ``kwargs`` to be a mapping here (content suites);
        otherwise GX's own check reports it when the suite is built.
        """
        if not self.need(isinstance(expectations, list), f"{where}.expectations must be a list"):
            return
        for j, entry in enumerate(expectations):
            named = isinstance(entry, Mapping) and isinstance(entry.get("expectation"), str)
            if not self.need(named, f"{where}.expectations[{j}] needs an 'expectation' name"):
                continue
            extra = set(entry) - _EXPECTATION_FIELDS
            self.need(not extra, f"{where}.expectations[{j}]: unknown field(s) {sorted(extra)}")
            if kwargs_mapping:
                self.need(
                    isinstance(entry.get("kwargs", {}), dict),
                    f"{where}.expectations[{j}].kwargs must be a mapping",
                )
