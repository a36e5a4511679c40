"""How one object's copy fails beyond what storage already names: bad bytes, a retry budget spent, a stop."""

from __future__ import annotations

from bascule.exceptions import BasculeError

RUNBOOK = "docs/runbooks.md#transfer"


class IntegrityError(BasculeError):
    """The bytes read do not hash to what the source declares. Nothing was made visible.

    Not retried: re-reading the same blob gives the same bytes. Either the blob's
    stored Content-MD5 is wrong (rewritten properties, a buggy uploader) or its data
    is damaged at the source; a person has to decide which.
    """

    retryable = False

    def __init__(self, where: str, key: str, *, expected: str, actual: str, detail: str = ""):
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{where}: blob '{key}': integrity check failed: source Content-MD5 is {expected}, the bytes read hash "
            f"to {actual}{' (' + detail + ')' if detail else ''}; nothing was written at the target. Compare the "
            f"blob with its producer's copy before re-running; see {RUNBOOK}"
        )


class RetriesExhausted(BasculeError):
    """A transient fault outlasted the retry budget. A later retry (of the task) may succeed."""

    retryable = True

    def __init__(self, what: str, attempts: int, waited_s: float, last: BaseException):
        self.attempts = attempts
        self.last = last
        super().__init__(
            f"{what}: gave up after {attempts} attempts ({waited_s:.1f} s of backoff); last error: {last}. "
            "The store kept failing: check its status page and the network path, then re-run "
            f"(copied objects are skipped); see {RUNBOOK}"
        )


class Cancelled(BasculeError):
    """The shard was asked to stop (task killed or timed out); the object was left untouched."""

    retryable = True
