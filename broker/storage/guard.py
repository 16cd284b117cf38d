"""Bounded storage calls: how long one may take, how many may run at once, and when not to
try at all.

- ``Timeouts``: botocore's connect and read time-outs and attempts derived from one bound
  (``BROKER_STORAGE_TIMEOUT``), so a storage operation that gets no answer fails within it;
  the health probe gets a shorter one.
- ``StorageGuard``: a bulkhead (at most ``limit`` storage calls in flight per process, so
  requests that need no storage always find a thread) and a circuit breaker (after
  ``threshold`` consecutive failures storage is known down: calls fail at once with 503
  ``storage.unavailable`` until ``cool_down`` seconds have passed; then one call probes it,
  and its success closes the breaker again).

The S3 adapter runs every call through ``S3Connection.errors``, which enters the guard: this
module is the one place these rules live. The embedded store's disk calls are not guarded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import StorageUnavailable
from ..metrics import STORAGE_ERRORS, STORAGE_LATENCY

log = logging.getLogger("broker.storage.guard")

RETRY_BACKOFF = 1.0
"""The longest wait botocore's standard retry mode makes before its first retry (seconds)."""
BULKHEAD_WAIT = 0.1
"""How long a call waits for a free storage slot before it answers 503 (absorbs bursts)."""


@dataclass(frozen=True)
class Timeouts:
    """botocore's per-attempt time-outs and its number of attempts (retries included)."""

    connect: float
    read: float
    attempts: int

    @property
    def worst_case(self) -> float:
        """The longest an operation can wait for storage, every attempt and back-off
        included (``read`` bounds each wait for a byte; a peer that is silent waits it once
        per attempt)."""
        return self.attempts * (self.connect + self.read) + (self.attempts - 1) * RETRY_BACKOFF

    @classmethod
    def within(cls, bound: float) -> Timeouts:
        """Time-outs whose worst case is at most ``bound`` seconds: two attempts from 6 s
        up (one below), connect at most 2 s (a fifth of the bound), read the rest."""
        attempts = 2 if bound >= 6 else 1
        connect = min(2.0, bound / 5)
        read = (bound - (attempts - 1) * RETRY_BACKOFF) / attempts - connect
        return cls(connect=connect, read=read, attempts=attempts)

    @classmethod
    def probe(cls, bound: float) -> Timeouts:
        """The health probe's: one attempt within ``min(3 s, bound / 2)``."""
        short = min(3.0, bound / 2)
        connect = min(1.0, short / 3)
        return cls(connect=connect, read=short - connect, attempts=1)


class StorageGuard:
    """Bulkhead and circuit breaker for one process's storage calls (thread-safe)."""

    def __init__(
        self,
        *,
        limit: int,
        threshold: int,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.threshold = threshold
        self.cool_down = cool_down
        self._clock = clock
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Whether storage is known down (calls fail at once, but for the probe)."""
        return self._opened_at is not None

    @contextmanager
    def call(self, action: str) -> Iterator[Callable[[], None]]:
        """Run one storage call: 503 at once while the breaker is open or every slot is
        busy. Yields ``failed``: the caller calls it when storage did not answer (a
        time-out, a refused connection, a 5xx); returning normally, or with an error
        storage answered (404, a refused part), counts as storage answering. Each call's
        time and each failure are counted (``broker_storage_*``, by action)."""
        try:
            probe = self._admit(action)
        except StorageUnavailable:
            STORAGE_ERRORS.labels(action, "refused").inc()
            raise
        if not self._slots.acquire(timeout=BULKHEAD_WAIT):
            self._settle(probe, None)
            STORAGE_ERRORS.labels(action, "refused").inc()
            raise StorageUnavailable(
                f"Too many storage calls are waiting; retry shortly ({action}).",
                action=action,
                headers={"Retry-After": "1"},
            )
        failed = False

        def mark() -> None:
            nonlocal failed
            failed = True

        started = time.perf_counter()
        try:
            yield mark
        finally:
            self._slots.release()
            self._settle(probe, failed)
            STORAGE_LATENCY.labels(action).observe(time.perf_counter() - started)
            if failed:
                STORAGE_ERRORS.labels(action, "unavailable").inc()

    def _admit(self, action: str) -> bool:
        """Let the call through (True when it is the probe of an open breaker) or 503."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = self._clock() - self._opened_at
            if waited >= self.cool_down and not self._probing:
                self._probing = True
                return True
            retry = max(1, math.ceil(self.cool_down - waited))
        raise StorageUnavailable(
            f"Storage is not answering; not trying again for a few seconds ({action}).",
            action=action,
            headers={"Retry-After": str(retry)},
        )

    def _settle(self, probe: bool, failed: bool | None) -> None:
        """Record a call's outcome (None: it never reached storage)."""
        with self._lock:
            if probe:
                self._probing = False
            if failed is None:
                return
            if not failed:
                if self._opened_at is not None:
                    log.warning("storage answers again: circuit closed")
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if probe or (self._opened_at is None and self._failures >= self.threshold):
                if self._opened_at is None:
                    log.warning(
                        "storage failed %d times in a row: circuit open for %.0f s",
                        self._failures,
                        self.cool_down,
                    )
                self._opened_at = self._clock()
