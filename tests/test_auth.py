"""Authentication: the verified-key cache of ``broker.auth.Authenticator``."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError
from broker.models import ApiKeyRecord

from support import Harness


def test_a_verified_key_is_trusted_for_the_cache_ttl_then_looked_up_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revocation elsewhere (another worker, the CLI) is honoured within the cache TTL; the
    revoking process forgets the key at once."""
    from broker.auth import Authenticator

    headers = harness.key("acme")
    presented = headers["Authorization"].removeprefix("Bearer ")
    now = [100.0]
    store = harness.service.store
    lookups: list[str] = []
    real_get_key = store.get_key

    def counting_get_key(key_id: str) -> ApiKeyRecord | None:
        lookups.append(key_id)
        return real_get_key(key_id)

    monkeypatch.setattr(store, "get_key", counting_get_key)
    auth = Authenticator(
        store, admin_key=None, allow_anonymous=False, cache_ttl=5, monotonic=lambda: now[0]
    )
    principal = auth.authenticate(presented)
    assert principal.tenant == "acme"
    assert auth.authenticate(presented) == principal
    assert len(lookups) == 1  # the second request was served from the cache
    key_id = principal.key_id
    assert key_id is not None
    store.revoke_key(key_id, 1)
    now[0] += 4.9
    assert auth.authenticate(presented) == principal  # still within the TTL
    now[0] += 0.2
    with pytest.raises(BrokerError) as refused:
        auth.authenticate(presented)
    assert refused.value.code == "auth.invalid_key"
