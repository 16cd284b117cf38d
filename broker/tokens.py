"""Signed tokens that carry their own expiry: the blob URLs and download links use them."""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from .config import Clock
from .errors import BrokerError


class ExpiringTokens:
    """itsdangerous-signed JSON payloads with an expiry ``e`` (Unix seconds) inside.

    The salt separates purposes: a token made for one (a download) never verifies as
    another (an upload), even under the same secret.
    """

    def __init__(self, secret_key: str, salt: str, clock: Clock) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=salt)
        self._clock = clock

    def dumps(self, payload: dict[str, Any]) -> str:
        """Sign a payload; it must hold its expiry under ``e``."""
        assert "e" in payload
        return self._serializer.dumps(payload)

    def loads(self, token: str) -> dict[str, Any]:
        """The payload; 403 ``blob.bad_signature`` if altered, ``blob.expired`` if old."""
        try:
            data = self._serializer.loads(token)
        except BadSignature as exc:
            raise BrokerError("blob.bad_signature") from exc
        if not isinstance(data, dict) or not isinstance(data.get("e"), int):
            raise BrokerError("blob.bad_signature")
        if self._clock() >= data["e"]:
            raise BrokerError("blob.expired")
        return data
