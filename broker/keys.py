"""API key administration (admin scope): mint a key for a tenant, list keys, revoke one."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .auth import ADMIN_KEY_ID, Authenticator, mint_key, require
from .context import Context
from .errors import BrokerError, validation_error
from .models import ApiKeyRecord, Principal, Scope


@dataclass(frozen=True)
class CreatedKey:
    """A new key's record and the key itself, shown this once and stored only hashed."""

    record: ApiKeyRecord
    key: str


class Keys:
    """The admin's key use cases."""

    def __init__(self, ctx: Context, authenticator: Authenticator) -> None:
        self.ctx = ctx
        self.authenticator = authenticator

    def create(
        self,
        principal: Principal,
        tenant: str,
        name: str | None,
        scopes: list[str] | None,
        *,
        expires_at: int | None = None,
        rate_limit: str | None = None,
    ) -> CreatedKey:
        """Mint a key for a tenant, optionally expiring at ``expires_at`` (in the future,
        else 422); the answer is the only time it is shown. ``rate_limit`` replaces
        ``BROKER_RATE_LIMIT`` for this key's requests."""
        require(principal, Scope.ADMIN)
        now = self.ctx.now()
        if expires_at is not None and expires_at <= now:
            raise validation_error({"expires_at": f"Must be in the future (now: {now})."})
        scope_set = tuple(dict.fromkeys(scopes or ()))
        record, key = mint_key(
            tenant, name, scope_set, now, expires_at=expires_at, rate_limit=rate_limit
        )
        self.ctx.store.insert_key(record)
        return CreatedKey(record=record, key=key)

    def all(self, principal: Principal, tenant: str | None) -> list[ApiKeyRecord]:
        """Every key (never a secret), optionally of one tenant."""
        require(principal, Scope.ADMIN)
        return list(self.ctx.store.list_keys(tenant))

    def revoke(self, principal: Principal, key_id: str) -> ApiKeyRecord:
        """Revoke a key; revoking twice answers the same."""
        require(principal, Scope.ADMIN)
        record = self.ctx.store.get_key(key_id) if key_id != ADMIN_KEY_ID else None
        if record is None:
            raise BrokerError("key.not_found", f"No API key {key_id}.")
        if record.revoked_at is None:
            now = self.ctx.now()
            self.ctx.store.revoke_key(key_id, now)
            record = replace(record, revoked_at=now)
        self.authenticator.forget(key_id)  # this process stops accepting it at once
        return record
