"""Storage CORS: whether the bucket lets a browser page at each ``BROKER_CORS_ORIGINS`` origin
PUT the bytes (with the headers the broker signs) and GET them, and read ``ETag``; and the
rule ``broker s3 setup`` writes so that it does.

Without it a browser's upload fails with nothing but "Failed to fetch", so the outcome is
reported by ``broker s3 check`` (exit 1), in ``GET /v1/health`` (``checks.storage_cors``)
and in the start-up log. S3's own matching is followed: a request is admitted by the first
rule whose ``AllowedOrigins``, ``AllowedMethods`` and ``AllowedHeaders`` (case-insensitive,
``*`` wildcards) all admit it; that rule's ``ExposeHeaders`` say what the page may read.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ..config import Clock
from ..errors import BrokerError
from .s3 import S3Storage
from .s3_connection import S3Connection, error_code

log = logging.getLogger("broker.storage.s3")

WRITE_ONCE_HEADER = "If-None-Match"
"""Signed into every presigned PUT (``If-None-Match: *``, write-once); admitted even where
a sample URL does not show it, so the rule need not change when it is switched on."""
EXPOSED = ("ETag",)
"""What a page must read from storage's answer (multipart completes with each part's ETag)."""
METHODS = ("PUT", "GET", "HEAD")
_NOT_BROWSER_SENT = {"content-length", "host"}
"""Signed headers a browser sets itself (forbidden to scripts, never in a preflight)."""
_PROBE_KEY = "broker-cors-probe"


def browser_headers(storage: S3Storage) -> tuple[str, ...]:
    """The headers a browser's PUT to storage carries: those the broker signs into a
    single PUT (with a declared SHA-256) and a part upload, and ``If-None-Match``."""
    expires_at = int(storage.connection.signing()[2]) + 60
    single = storage.presign_put(
        _PROBE_KEY, size=1, content_type="application/octet-stream", sha256="0" * 64,
        expires_at=expires_at,
    )  # fmt: skip
    part = storage.presign_part(_PROBE_KEY, "probe", part_number=1, size=1, expires_at=expires_at)
    names: dict[str, str] = {}
    for name in [*single.headers, *part.headers, WRITE_ONCE_HEADER]:
        if name.lower() not in _NOT_BROWSER_SENT:
            names.setdefault(name.lower(), name)
    return tuple(names.values())


def cors_rule(origins: Sequence[str], headers: Iterable[str]) -> dict[str, Any]:
    """The CORS rule ``broker s3 setup`` writes: these origins may PUT, GET and HEAD with
    exactly ``headers``, and read ``ETag`` (and the checksum S3 computed)."""
    return {
        "AllowedOrigins": list(origins),
        "AllowedMethods": list(METHODS),
        "AllowedHeaders": sorted(headers, key=str.lower),
        "ExposeHeaders": [*EXPOSED, "x-amz-checksum-sha256"],
        "MaxAgeSeconds": 600,
    }


def read_rules(connection: S3Connection) -> list[dict[str, Any]]:
    """The bucket's CORS rules (GetBucketCors; none configured is an empty list). Raises
    ``StorageUnavailable`` when S3 does not answer."""
    with connection.errors("read the bucket's CORS rules"):
        try:
            answer = connection.probe_client.get_bucket_cors(Bucket=connection.bucket)
        except ClientError as exc:
            if error_code(exc) == "NoSuchCORSConfiguration":
                return []
            raise
    return list(answer.get("CORSRules", []))


def missing(
    rules: Sequence[dict[str, Any]], origins: Sequence[str], headers: Sequence[str]
) -> list[str]:
    """What the rules lack for each origin, one line each (empty: nothing)."""
    if not rules:
        return ["the bucket has no CORS rules"]
    problems: list[str] = []
    for origin in origins:
        for method, sent in (("PUT", headers), ("GET", ())):
            rule = _admitting(rules, origin, method, sent)
            if isinstance(rule, str):
                problems.append(rule)
            elif method == "PUT":
                exposed = {h.lower() for h in rule.get("ExposeHeaders", [])}
                problems += [
                    f"{origin}: {name} is not exposed"
                    for name in EXPOSED
                    if name.lower() not in exposed
                ]
    return problems


def _admitting(
    rules: Sequence[dict[str, Any]], origin: str, method: str, headers: Sequence[str]
) -> dict[str, Any] | str:
    """The first rule admitting the request, or what the closest rule lacks."""
    for_origin = [r for r in rules if _any(r.get("AllowedOrigins", []), origin, case=True)]
    if not for_origin:
        return f"{origin}: no rule allows this origin"
    for_method = [r for r in for_origin if method in r.get("AllowedMethods", [])]
    if not for_method:
        return f"{origin}: {method} is not an allowed method"
    lacking = []
    for rule in for_method:
        refused = [h for h in headers if not _any(rule.get("AllowedHeaders", []), h, case=False)]
        if not refused:
            return rule
        lacking.append(refused)
    fewest = min(lacking, key=len)
    return f"{origin}: {method} does not allow the header(s) {', '.join(fewest)}"


def _any(patterns: Iterable[str], value: str, *, case: bool) -> bool:
    """Whether a pattern (``*`` matches any run of characters) matches ``value``."""
    flags = 0 if case else re.IGNORECASE
    return any(
        re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), value, flags)
        for pattern in patterns
    )


class CorsCheck:
    """The bucket's CORS, checked against the configured origins; the outcome is kept for
    ``ttl`` seconds, so a health probe does not cost a storage call each time."""

    def __init__(
        self, storage: S3Storage, origins: Sequence[str], clock: Clock, ttl: float = 300.0
    ) -> None:
        self.storage = storage
        self.origins = tuple(origins)
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._status = ""

    def problems(self) -> list[str]:
        """What is missing now (asks S3; raises ``StorageUnavailable`` when it does not
        answer)."""
        rules = read_rules(self.storage.connection)
        return missing(rules, self.origins, browser_headers(self.storage))

    def status(self) -> str:
        """``ok``, ``missing: <what>; <what>`` or ``unknown: <why>``, at most ``ttl`` old."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._ttl:
                self._status = self._describe()
                self._checked_at = now
            return self._status

    def _describe(self) -> str:
        try:
            problems = self.problems()
        except BrokerError as exc:
            return f"unknown: {exc.message}"
        return "missing: " + "; ".join(problems) if problems else "ok"

    def log_at_start(self) -> None:
        """A warning line when the rule lacks anything (for the server's start-up log)."""
        status = self.status()
        if status != "ok":
            log.warning(
                "storage CORS %s (browsers at %s cannot upload or download; "
                "run `broker s3 check`, then `broker s3 setup`)",
                status,
                ", ".join(self.origins),
            )
