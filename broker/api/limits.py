"""Rate limits (flask-limiter): requests per caller per window, and a bucket's own limit on
the declares into it. Over either: 429 ``rate_limited`` with ``Retry-After``.

Who the caller is needs authentication, so it happens first: a hook before flask-limiter's
resolves the principal of every operation that needs a key (``api.principal``, kept on
``g``; the view reuses it, nothing authenticates twice). Counts belong to the principal's
``subject`` (``key:<id>``); a request without a valid key counts against the client's
address (so guessing keys is limited too). The routes that need no key are not limited:
blob and download URLs are authorised by their signature, health and metrics are probes.

Counters live in each process's memory, or in Redis (``BROKER_REDIS_URL``) shared by every
instance. When Redis fails, flask-limiter falls back to per-process counters in memory (a
warning is logged) and tries Redis again after 1, 2, 4, … seconds; any other failure of the
limiter is logged and the request is served: the limiter never takes the API down.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage

from ..config import Settings
from ..errors import BrokerError
from ..models import Principal
from . import principal
from .errors import error_response
from .operations import operation_of

log = logging.getLogger("broker")
PREFIX = "broker"
"""Prefix of every counter's key (one Redis may serve other applications too)."""
REDIS_TIMEOUT = 0.25
"""Seconds to wait for Redis before falling back to memory (a request is never held
longer by a Redis that does not answer)."""


SWEEP = 1.0
"""Seconds between sweeps of expired counters in memory."""


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage, its expired counters swept inline once a ``SWEEP`` instead
    of by a timer thread started (10 ms ahead) by any count when none runs: under load that
    is a thread start every few requests, half the limiter's cost. Counters still expire on
    read (``MemoryStorage.get``); the sweep only frees the memory of callers gone quiet."""

    STORAGE_SCHEME = ["broker-memory"]  # noqa: RUF012  (limits' registry reads the class)

    def __init__(self, uri: str | None = None, **options: str) -> None:
        super().__init__(uri, **options)  # type: ignore[arg-type]
        self._sweep_at = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # overrides the private hook
        now = time.monotonic()
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def caller() -> str:
    """Whom the request's counts belong to: the principal, else the client's address."""
    found: Principal | None = g.get("principal")
    subject = found.subject if found is not None else None
    return subject or f"addr:{request.remote_addr or 'unknown'}"


def _identify() -> None:
    """Authenticate an operation that needs a key before its limit is counted. A failed
    authentication stays on ``g`` for the view to raise; the request counts by address.
    A CORS preflight (OPTIONS) is not counted: it carries no key, and a refused one would
    fail the browser's request that follows it."""
    view = current_app.view_functions.get(request.endpoint or "")
    op = operation_of(view) if view is not None else None
    g.limited = op is not None and op.auth and request.method != "OPTIONS"
    if g.limited:
        with contextlib.suppress(BrokerError):  # the view's principal() raises it again
            principal()


class RateLimits:
    """The app's limiter: the per-caller limit on every keyed route, and buckets' limits."""

    def __init__(self, settings: Settings) -> None:
        self.default = settings.rate_limit or ""
        options: dict[str, str | int] = {}
        if settings.redis_url:
            options = {  # redis-py takes these as floats; the annotation says str | int
                "socket_timeout": REDIS_TIMEOUT,  # type: ignore[dict-item]
                "socket_connect_timeout": REDIS_TIMEOUT,  # type: ignore[dict-item]
            }
        self.limiter = Limiter(
            caller,
            application_limits=[
                ApplicationLimit(self._limit_of_caller, scope="requests", exempt_when=_unkeyed)
            ],
            storage_uri=settings.redis_url or "broker-memory://",
            storage_options=options,
            strategy="fixed-window",
            swallow_errors=True,
            in_memory_fallback_enabled=True,
            key_prefix=PREFIX,
            headers_enabled=False,  # on the 429 only: elsewhere it costs a storage read
            enabled=settings.rate_limit is not None,
        )

    def init_app(self, app: Flask) -> None:
        """Authenticate, then count, before every view; render a breach in the envelope."""
        if not self.limiter.enabled:
            return
        app.before_request(_identify)  # before flask-limiter's own hook: it needs the caller
        self.limiter.init_app(app)
        app.register_error_handler(RateLimitExceeded, self._refuse)
        app.extensions["broker.limits"] = self

    def _limit_of_caller(self) -> str:
        """The key's own limit, else ``BROKER_RATE_LIMIT``."""
        found: Principal | None = g.get("principal")
        return (found.rate_limit if found is not None else None) or self.default

    def _refuse(self, exc: RateLimitExceeded) -> Response:
        """429 ``rate_limited`` with Retry-After and the breached limit's RateLimit headers."""
        breached = self.limiter.current_limit
        return error_response(_limited(exc.limit.limit, breached, "Too many requests"))

    def declare(self, bucket_limit: str | None, bucket: str) -> None:
        """Count a declare into ``bucket`` against its own limit, per caller (429 over it)."""
        if not bucket_limit:
            return
        for item in _parse(bucket_limit):
            identifiers = (PREFIX, "bucket", bucket, caller())
            try:
                allowed = self.limiter.limiter.hit(item, *identifiers)
                if allowed:
                    continue
                reset_at = int(self.limiter.limiter.get_window_stats(item, *identifiers)[0] + 1)
            except Exception:  # the limiter never takes the API down
                log.exception("bucket rate limit unavailable; request served unlimited")
                return
            raise _limited(item, None, f"Too many declares into bucket {bucket!r}", reset_at)


def declare(bucket_limit: str | None, bucket: str) -> None:
    """A bucket's limit on a declare, when limits are on (``RateLimits.declare``)."""
    limits: RateLimits | None = current_app.extensions.get("broker.limits")
    if limits is not None:
        limits.declare(bucket_limit, bucket)


@functools.lru_cache(maxsize=256)
def _parse(limit: str) -> list[RateLimitItem]:
    return parse_many(limit)


def _unkeyed() -> bool:
    """Routes that need no key are not limited (see the module's docstring)."""
    return not g.get("limited")


def _limited(
    item: RateLimitItem,
    breached: RequestLimit | None,
    what: str,
    reset_at: int | None = None,
) -> BrokerError:
    """The 429 for a breached limit: Retry-After until its window resets."""
    now = time.time()
    if reset_at is None:
        try:
            reset_at = breached.reset_at if breached is not None else None
        except Exception:  # storage failed since the breach: the window's length will do
            reset_at = None
    if reset_at is None:
        reset_at = int(now) + item.get_expiry()
    retry_after = max(1, int(reset_at - now))
    return BrokerError(
        "rate_limited",
        f"{what}: at most {item.amount} per {item.multiples} {item.GRANULARITY.name}; "
        f"retry in {retry_after} s.",
        details={"limit": str(item), "retry_after": retry_after},
        headers={
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_at),
        },
    )
