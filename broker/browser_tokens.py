"""Browser upload tokens as credentials: ``bt_`` and an itsdangerous-signed grant.

A token is self-contained: it names its tenant, its parent key, its own id, its limits and
its expiry, signed with the broker's secret under a salt of its own (so no blob URL or
download link ever verifies as a token, nor a token as one of them). The database is asked
only about the parent key: a token dies with it (``auth.Authenticator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Clock
from .errors import BrokerError
from .models import TokenGrant
from .tokens import ExpiringTokens

TOKEN_PREFIX = "bt_"  # noqa: S105  (what tokens start with, not a secret)
SALT = "broker.browser-token"
MAX_TOKEN_CHARS = 6144
"""The longest token minted: with ``Authorization: Bearer `` it stays within the 8,190
bytes a header line may have (gunicorn's limit)."""


@dataclass(frozen=True)
class SignedGrant:
    """What a verified token says: whose it is and what it allows."""

    tenant: str
    parent_key_id: str | None
    grant: TokenGrant


class BrowserTokens:
    """Signs and verifies browser upload tokens (with the broker's secret)."""

    def __init__(self, secret_key: str, clock: Clock) -> None:
        self._tokens = ExpiringTokens(secret_key, SALT, clock)

    @staticmethod
    def claims(presented: str) -> bool:
        """Whether a presented credential is a browser token (not an API key)."""
        return presented.startswith(TOKEN_PREFIX)

    def sign(self, tenant: str, parent_key_id: str | None, grant: TokenGrant) -> str:
        """The token for ``grant``, valid until ``grant.expires_at``."""
        payload: dict[str, Any] = {
            "t": tenant,
            "k": parent_key_id,
            "i": grant.id,
            "b": grant.bucket,
            "e": grant.expires_at,
        }
        optional = {
            "p": grant.key_prefix,
            "s": grant.max_size,
            "m": None if grant.mime_types is None else list(grant.mime_types),
            "n": grant.max_files,
            "d": grant.metadata or None,
            "o": grant.origin,
        }
        payload.update((name, value) for name, value in optional.items() if value is not None)
        return TOKEN_PREFIX + self._tokens.dumps(payload)

    def verify(self, presented: str) -> SignedGrant:
        """The token's grant: 401 ``auth.invalid_key`` if altered or not a token,
        ``auth.expired_key`` once past its expiry."""
        try:
            data = self._tokens.loads(presented.removeprefix(TOKEN_PREFIX))
        except BrokerError as exc:
            if exc.code == "blob.expired":
                raise BrokerError("auth.expired_key", "The browser token has expired.") from None
            raise BrokerError("auth.invalid_key", "The browser token is invalid.") from None
        mime_types = data.get("m")
        return SignedGrant(
            tenant=data["t"],
            parent_key_id=data["k"],
            grant=TokenGrant(
                id=data["i"],
                bucket=data["b"],
                expires_at=data["e"],
                key_prefix=data.get("p"),
                max_size=data.get("s"),
                mime_types=None if mime_types is None else tuple(mime_types),
                max_files=data.get("n"),
                metadata=data.get("d") or {},
                origin=data.get("o"),
            ),
        )
