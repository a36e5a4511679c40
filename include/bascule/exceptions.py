"""The few error types an on-call engineer can act on.

Each message says what failed, on which object, and what to do about it.
"""

from __future__ import annotations


class BasculeError(Exception):
    """Base of every error Bascule raises on purpose."""


class _ProblemList(BasculeError):
    """An error about one subject with several problems: the message lists them one a line."""

    def __init__(self, heading: str, problems: list[str]):
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{heading}:\n{lines}")


class ManifestError(_ProblemList):
    """A workload manifest is malformed. The message names the file and the field."""

    def __init__(self, path: str, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"invalid workload manifest {path}", problems)


class PreflightError(_ProblemList):
    """One or more preflight checks failed; no byte has moved."""

    def __init__(self, workload_id: str, failures: list[str]):
        self.workload_id, self.failures = workload_id, failures
        super().__init__(f"preflight failed for workload '{workload_id}'", failures)


class PolicyViolation(BasculeError):
    """A sovereignty/HDS rule refuses the configuration. Retrying cannot help."""


class StoreAccessError(BasculeError):
    """A storage endpoint refused or could not be reached.

    ``retryable`` tells the Airflow glue whether a retry can help
    (unreachable endpoint) or not (bad credentials, missing container).
    """

    def __init__(self, message: str, *, retryable: bool):
        self.retryable = retryable
        super().__init__(message)
