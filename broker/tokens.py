"""Signed tokens that carry their own expiry: the blob URLs and download links use them."""

from __future__ import annotations

import base64
import hmac
import json
import zlib
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
        # itsdangerous derives the signing key (a SHA-1 over salt and secret) and sets up an
        # HMAC on every dumps(); do both once and copy the keyed HMAC per token instead.
        signer = self._serializer.make_signer()
        self._mac = hmac.new(signer.derive_key(), digestmod=signer.algorithm.digest_method)  # type: ignore[attr-defined]
        self._sep = signer.sep

    def dumps(self, payload: dict[str, Any]) -> str:
        """Sign a payload; it must hold its expiry under ``e``.

        Byte for byte ``URLSafeSerializer(secret_key, salt).dumps(payload)`` (compact JSON,
        zlib when that is shorter, URL-safe base64, HMAC-SHA1 signature), at half the cost;
        ``tests/test_tokens.py`` holds the two equal.
        """
        assert "e" in payload
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        compressed = zlib.compress(data)
        shorter = len(compressed) < len(data) - 1
        body = b"." + _b64(compressed) if shorter else _b64(data)
        mac = self._mac.copy()
        mac.update(body)
        return (body + self._sep + _b64(mac.digest())).decode()

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


def _b64(data: bytes) -> bytes:
    """itsdangerous' base64: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")
