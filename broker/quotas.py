"""Quotas at grant time: how many unexpired pending uploads a tenant may hold, and how many
declared bytes they may add up to (``BROKER_QUOTA_PENDING_FILES``, ``…_BYTES``).

Checked on every declare, so it must cost next to nothing: each process remembers a tenant's
usage (one indexed aggregate, ``MetadataStore.pending_usage``) for ``STALENESS`` seconds and
adds what it admits meanwhile. Only admissions trust that memory; a refusal is always
decided on a fresh aggregate, so completing or aborting uploads frees the quota at once. The
price: other processes' declares are seen up to ``STALENESS`` seconds late, so a tenant may
pass a quota by what its other instances admit in that time (the rate limit bounds it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .db import MetadataStore
from .errors import BrokerError

STALENESS = 1.0
"""Seconds a process trusts its count of a tenant's pending uploads before asking again."""
TENANTS = 10_000
"""Tenants a process remembers at most (the oldest is forgotten first)."""


@dataclass
class _Usage:
    files: int
    bytes: int
    earliest_expiry: int | None
    until: float
    """Monotonic time after which the database is asked again."""


class PendingQuota:
    """Admits a declaration while its tenant's pending uploads stay within the quotas."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        max_files: int | None,
        max_bytes: int | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._monotonic = monotonic
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def admit(self, tenant: str, size: int, now: int) -> None:
        """Count one more pending upload of ``size`` bytes, or raise 429 ``quota.exceeded``
        (Retry-After: until the tenant's earliest pending upload expires)."""
        if self.max_files is None and self.max_bytes is None:
            return
        usage = self._usage.get(tenant)
        if usage is None or self._monotonic() >= usage.until or not self._fits(usage, size):
            usage = self._fresh(tenant, now)
            if not self._fits(usage, size):
                raise self._exceeded(usage, size, now)
        with self._lock:  # this process's own admissions count before the next refresh
            usage.files += 1
            usage.bytes += size

    def _fits(self, usage: _Usage, size: int) -> bool:
        return (self.max_files is None or usage.files + 1 <= self.max_files) and (
            self.max_bytes is None or usage.bytes + size <= self.max_bytes
        )

    def _fresh(self, tenant: str, now: int) -> _Usage:
        files, bytes_, earliest = self.store.pending_usage(tenant, now)
        usage = _Usage(files, bytes_, earliest, self._monotonic() + STALENESS)
        with self._lock:
            self._usage.pop(tenant, None)
            if len(self._usage) >= TENANTS:
                self._usage.pop(next(iter(self._usage)), None)
            self._usage[tenant] = usage
        return usage

    def _exceeded(self, usage: _Usage, size: int, now: int) -> BrokerError:
        retry_after = max(1, (usage.earliest_expiry or now + 1) - now)
        if self.max_files is not None and usage.files + 1 > self.max_files:
            what = f"{usage.files} pending uploads (at most {self.max_files})"
        else:
            what = f"{usage.bytes} pending bytes; {size} more would pass {self.max_bytes}"
        return BrokerError(
            "quota.exceeded",
            f"This tenant holds {what}. Complete or abort some, or retry in {retry_after} s "
            "when the oldest expires.",
            details={
                "pending_files": usage.files,
                "max_pending_files": self.max_files,
                "pending_bytes": usage.bytes,
                "max_pending_bytes": self.max_bytes,
                "retry_after": retry_after,
            },
            headers={"Retry-After": str(retry_after)},
        )
