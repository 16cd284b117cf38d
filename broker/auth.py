"""Credentials: API keys (minted, stored as SHA-256 only, checked in constant time, with an
optional expiry) and browser upload tokens (verified by signature, alive while their parent
key is), and what each may do."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from .browser_tokens import BrowserTokens
from .config import Clock
from .db import MetadataStore
from .errors import BrokerError
from .ids import new_id
from .models import DEFAULT_SCOPES, ApiKeyRecord, Principal, Scope

KEY_PREFIX = "bk"
_KEY_RE = re.compile(r"^bk_([0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
ADMIN_KEY_ID = "key_admin"
DEFAULT_TENANT = "default"
TOKEN_SCOPES = frozenset({Scope.FILES_READ.value, Scope.FILES_WRITE.value})
"""What a browser token acts with, only where an action takes a token (``require``) and
only on its own files (``Context.file``)."""


def hash_secret(key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mint_key(
    tenant: str,
    name: str | None,
    scopes: tuple[str, ...],
    now: int,
    *,
    expires_at: int | None = None,
    rate_limit: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key record and the key itself (shown once): ``bk_<id>_<secret>``. Without
    ``scopes`` it gets ``DEFAULT_SCOPES``."""
    key_id = new_id("key")
    key = f"{KEY_PREFIX}_{key_id.removeprefix('key_')}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        tenant=tenant,
        name=name,
        scopes=scopes or tuple(s.value for s in DEFAULT_SCOPES),
        secret_hash=hash_secret(key),
        created_at=now,
        expires_at=expires_at,
        rate_limit=rate_limit,
    )
    return record, key


CACHE_SIZE = 10_000
"""Verified keys a process remembers at most (the oldest is forgotten first)."""


class Authenticator:
    """Turns a presented key or browser token into a Principal, or raises 401.

    A credential verified against the database is remembered for ``cache_ttl`` seconds (per
    process, by its hash), so a client's requests do not each cost a lookup. Revocation
    therefore takes effect within ``cache_ttl`` seconds everywhere (at once in the process
    that revoked it); ``cache_ttl=0`` looks every key up. Expiry is judged on every request,
    cached or not: a key or token is refused from its ``expires_at`` on.
    """

    def __init__(
        self,
        store: MetadataStore,
        *,
        admin_key: str | None,
        allow_anonymous: bool,
        tokens: BrowserTokens | None = None,
        clock: Clock = time.time,
        cache_ttl: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._allow_anonymous = allow_anonymous
        self._tokens = tokens
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._monotonic = monotonic
        self._verified: dict[str, tuple[Principal, float]] = {}

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache (it was just revoked)."""
        for digest, (principal, _) in list(self._verified.items()):
            if principal.key_id == key_id:
                self._verified.pop(digest, None)

    def authenticate(self, presented: str | None) -> Principal:
        """Resolve the key or token; unknown, malformed and revoked ones all look the same
        (401 ``auth.invalid_key``); an expired one is 401 ``auth.expired_key``."""
        if not presented:
            if self._allow_anonymous:
                return self._anonymous()
            raise BrokerError("auth.missing_key")
        digest = hash_secret(presented)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return self._admin()
        cached = self._verified.get(digest)
        if cached is not None and self._monotonic() < cached[1]:
            principal = cached[0]
        else:
            if self._tokens is not None and self._tokens.claims(presented):
                principal = self._token(presented)
            else:
                principal = self._lookup(presented, digest)
            if self._cache_ttl > 0:
                if len(self._verified) >= CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)), None)
                self._verified[digest] = (principal, self._monotonic() + self._cache_ttl)
        if principal.expires_at is not None and self._clock() >= principal.expires_at:
            kind = "browser token (or its key)" if principal.token is not None else "API key"
            raise BrokerError("auth.expired_key", f"The {kind} has expired.")
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
            expires_at=record.expires_at,
            rate_limit=record.rate_limit,
        )

    def _token(self, presented: str) -> Principal:
        """Verify a browser token, then its parent key: a token dies with it."""
        assert self._tokens is not None
        signed = self._tokens.verify(presented)
        parent = self._parent(signed.parent_key_id)
        if parent.tenant != signed.tenant or not parent.can(Scope.FILES_WRITE):
            raise BrokerError("auth.invalid_key", "The browser token's key is no longer valid.")
        expires_at = signed.grant.expires_at
        if parent.expires_at is not None:
            expires_at = min(expires_at, parent.expires_at)
        return Principal(
            tenant=signed.tenant,
            scopes=TOKEN_SCOPES,
            key_id=parent.key_id,
            expires_at=expires_at,
            token=signed.grant,
        )

    def _parent(self, key_id: str | None) -> Principal:
        """The key a token was minted with, as it stands now (401 if revoked or gone)."""
        if key_id == ADMIN_KEY_ID and self._admin_hash is not None:
            return self._admin()
        if key_id is None and self._allow_anonymous:
            return self._anonymous()
        record = self._store.get_key(key_id) if key_id else None
        if record is None or record.revoked_at is not None:
            raise BrokerError("auth.invalid_key", "The browser token's key was revoked.")
        return Principal(
            tenant=record.tenant,
            scopes=frozenset(record.scopes),
            key_id=record.id,
            expires_at=record.expires_at,
        )

    @staticmethod
    def _admin() -> Principal:
        return Principal(
            tenant=DEFAULT_TENANT, scopes=frozenset({Scope.ADMIN.value}), key_id=ADMIN_KEY_ID
        )

    @staticmethod
    def _anonymous() -> Principal:
        return Principal(tenant=DEFAULT_TENANT, scopes=frozenset(s.value for s in DEFAULT_SCOPES))


def require(principal: Principal, scope: Scope | None, *, token: bool = False) -> None:
    """403 ``auth.forbidden`` unless the principal holds ``scope`` (admin holds all; None:
    any key will do); a browser token is refused unless the action takes one (``token``)."""
    if principal.token is not None and not token:
        raise BrokerError(
            "auth.forbidden",
            "A browser token can only declare, complete, abort and read its own files.",
        )
    if scope is not None and not principal.can(scope):
        raise BrokerError("auth.forbidden", f"This action needs the {scope.value!r} scope.")
