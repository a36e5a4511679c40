"""Retrying one object's store operations under the copy's retry policy, and counting the retries."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from bascule.exceptions import BasculeError
from bascule.objects.copy_config import CopyConfig
from bascule.objects.copy_errors import Cancelled, RetriesExhausted

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Attempts:
    """Retries of one object's operations, and their count.

    Only errors that say ``retryable`` are retried (storage classifies them); a set
    ``cancel`` event stops the object before the next attempt and during a backoff.
    """

    def __init__(self, config: CopyConfig, cancel: threading.Event | None, key: str):
        self._policy = config.retry
        self._sleep = config.sleep
        self._cancel = cancel
        self._rng = random.Random(config.seed) if config.seed is not None else random.Random()
        self.key = key
        self.retries = 0

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"copy of '{self.key}' cancelled: the shard is stopping; nothing was left half-written")

    def call(self, what: str, operation: Callable[[], _T]) -> _T:
        attempt, waited = 0, 0.0
        while True:
            self.check_cancel()
            attempt += 1
            try:
                return operation()
            except BasculeError as exc:
                if not getattr(exc, "retryable", False):
                    raise
                if attempt >= self._policy.max_attempts:
                    raise RetriesExhausted(what, attempt, waited, exc) from exc
                delay = self._policy.delay(attempt, self._rng)
                if waited + delay > self._policy.max_total_delay_s:
                    raise RetriesExhausted(what, attempt, waited, exc) from exc
                self.retries += 1
                log.warning(
                    "%s (blob '%s'): transient failure, retry %d/%d in %.1f s: %s",
                    what,
                    self.key,
                    attempt,
                    self._policy.max_attempts - 1,
                    delay,
                    exc,
                )
                self._back_off(delay)
                waited += delay

    def _back_off(self, delay: float) -> None:
        if self._cancel is None:
            self._sleep(delay)
        elif self._cancel.wait(delay):
            self.check_cancel()
