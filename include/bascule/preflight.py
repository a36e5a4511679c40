"""Preflight: prove a workload can run before any byte moves.

Every check runs (one failure does not hide the next), each result says what was
checked and why it failed, and the caller learns whether a retry could help. The
report and its collector are shared; each kind's checks live with the kind
(``bascule.objects.preflight``, ``bascule.postgres.preflight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bascule.exceptions import PreflightError, StoreAccessError
from bascule.governance.policy import CheckResult, PolicyReport


@dataclass(frozen=True)
class PreflightReport:
    workload_id: str
    checks: list[CheckResult]
    # True when every failure is of a kind a retry can cure (an endpoint unreachable).
    retryable: bool
    # The sovereignty/HDS verdict on the target, for the evidence (None: not evaluated).
    policy: PolicyReport | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def raise_for_failures(self) -> None:
        if not self.ok:
            raise PreflightError(self.workload_id, [f"{c.name}: {c.detail}" for c in self.checks if not c.ok])

    def summary(self) -> dict[str, Any]:
        """A small, XCom-sized record of the outcome."""
        record: dict[str, Any] = {
            "workload_id": self.workload_id,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }
        if self.policy is not None:
            record["policy"] = self.policy.to_json()
        return record


class CheckCollector:
    def __init__(self) -> None:
        self.checks: list[CheckResult] = []
        self._transient_failures = 0
        self._hard_failures = 0

    def add(self, result: CheckResult) -> CheckResult:
        self.checks.append(result)
        if not result.ok:
            self._hard_failures += 1
        return result

    def access_failed(self, name: str, exc: StoreAccessError) -> None:
        self.checks.append(CheckResult(name, False, str(exc)))
        if exc.retryable:
            self._transient_failures += 1
        else:
            self._hard_failures += 1

    def report(self, workload_id: str, policy: PolicyReport | None = None) -> PreflightReport:
        return PreflightReport(
            workload_id, self.checks, retryable=self._transient_failures > 0 and self._hard_failures == 0, policy=policy
        )


