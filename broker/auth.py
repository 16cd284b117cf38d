"""API keys: how they are minted, stored (SHA-256 only) and checked (constant time)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from .db import MetadataStore
from .errors import BrokerError
from .ids import new_id
from .models import DEFAULT_SCOPES, ApiKeyRecord, Principal, Scope

KEY_PREFIX = "bk"
_KEY_RE = re.compile(r"^bk_([0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
ADMIN_KEY_ID = "key_admin"
DEFAULT_TENANT = "default"


def hash_secret(key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mint_key(
    tenant: str,
    name: str | None,
    scopes: tuple[str, ...],
    now: int,
    rate_limit: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key record and the key itself (shown once): ``bk_<id>_<secret>``."""
    key_id = new_id("key")
    key = f"{KEY_PREFIX}_{key_id.removeprefix('key_')}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        tenant=tenant,
        name=name,
        scopes=scopes or tuple(s.value for s in DEFAULT_SCOPES),
        secret_hash=hash_secret(key),
        created_at=now,
        rate_limit=rate_limit,
    )
    return record, key


CACHE_SIZE = 10_000
"""Verified keys a process remembers at most (the oldest is forgotten first)."""


class Authenticator:
    """Turns a presented key into a Principal, or raises 401.

    A key verified against the database is remembered for ``cache_ttl`` seconds (per
    process, by its hash), so a client's requests do not each cost a lookup. Revocation
    therefore takes effect within ``cache_ttl`` seconds everywhere (at once in the process
    that revoked it); ``cache_ttl=0`` looks every key up.
    """

    def __init__(
        self,
        store: MetadataStore,
        *,
        admin_key: str | None,
        allow_anonymous: bool,
        cache_ttl: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._allow_anonymous = allow_anonymous
        self._cache_ttl = cache_ttl
        self._monotonic = monotonic
        self._verified: dict[str, tuple[Principal, float]] = {}

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache (it was just revoked)."""
        for digest, (principal, _) in list(self._verified.items()):
            if principal.key_id == key_id:
                self._verified.pop(digest, None)

    def authenticate(self, presented: str | None) -> Principal:
        """Resolve the key; unknown, malformed and revoked keys all look the same (401)."""
        if not presented:
            if self._allow_anonymous:
                return Principal(
                    tenant=DEFAULT_TENANT, scopes=frozenset(s.value for s in DEFAULT_SCOPES)
                )
            raise BrokerError("auth.missing_key")
        digest = hash_secret(presented)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return Principal(
                tenant=DEFAULT_TENANT, scopes=frozenset({Scope.ADMIN.value}), key_id=ADMIN_KEY_ID
            )
        cached = self._verified.get(digest)
        if cached is not None and self._monotonic() < cached[1]:
            return cached[0]
        principal = self._lookup(presented, digest)
        if self._cache_ttl > 0:
            if len(self._verified) >= CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)), None)
            self._verified[digest] = (principal, self._monotonic() + self._cache_ttl)
        return principal

    def _lookup(self, presented: str, digest: str) -> Principal:
        """Verify a tenant key against the database (constant time on a miss too)."""
        match = _KEY_RE.match(presented)
        record = self._store.get_key(f"key_{match.group(1)}") if match else None
        stored = record.secret_hash if record else _DUMMY_HASH
        # Compare even when there is no record so a miss costs the same as a wrong secret.
        if (
            not hmac.compare_digest(digest, stored)
            or record is None
            or record.revoked_at is not None
        ):
            raise BrokerError("auth.invalid_key")
        return Principal(
            tenant=record.tenant,
            scopes=frozenset(record.scopes),
            key_id=record.id,
            rate_limit=record.rate_limit,
        )


def require(principal: Principal, scope: Scope) -> None:
    """403 ``auth.forbidden`` unless the principal holds ``scope`` (admin holds all)."""
    if not principal.can(scope):
        raise BrokerError("auth.forbidden", f"This action needs the {scope.value!r} scope.")
