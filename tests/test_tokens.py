"""The expiring tokens behind the blob URLs and the download links: itsdangerous's own
tokens, made faster."""

from __future__ import annotations

import pytest

from support import FrozenClock


@pytest.mark.parametrize(
    "payload",
    [
        {"e": 1},
        {"k": "acme/default/01jd7/a.txt", "s": 1234, "t": "text/plain", "h": None, "e": 2**31},
        {"k": "ü/名前 with spaces.txt", "t": "text/html; charset=utf-8", "n": "ä", "a": 1, "e": 9},
        {"t": "acme", "f": "file_01JD7ZZZZZZZZZZZZZZZZZZZZZ", "e": 1_700_000_000},
        {"k": "x" * 600, "h": "ab" * 32, "e": 5},  # long and repetitive: zlib-compressed
        {"k": '\x00\u2028"\\', "e": -1},
    ],
)
@pytest.mark.parametrize("salt", ["broker.blob.put", "broker.blob.get", "broker.download"])
def test_tokens_are_itsdangerous_tokens_byte_for_byte(
    payload: dict[str, object], salt: str, clock: FrozenClock
) -> None:
    """The hand-rolled signer makes exactly URLSafeSerializer's tokens, and they verify."""
    from itsdangerous import URLSafeSerializer

    from broker.tokens import ExpiringTokens

    secret = "s" * 40
    tokens = ExpiringTokens(secret, salt, clock)
    token = tokens.dumps(payload)
    assert token == URLSafeSerializer(secret, salt=salt).dumps(payload)
    assert URLSafeSerializer(secret, salt=salt).loads(token) == payload
    if payload.get("k") == "x" * 600:
        assert token.startswith(".")  # zlib was shorter: both paths are covered
    if payload == {"e": 1}:
        assert not token.startswith(".")
