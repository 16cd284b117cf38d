"""Authentication: the verified-key cache of ``broker.auth.Authenticator``, key expiry,
browser tokens and their parent keys, and the subject a credential is counted as."""

from __future__ import annotations

import pytest

from broker.auth import mint_key
from broker.browser_tokens import BrowserTokens
from broker.errors import BrokerError
from broker.models import ApiKeyRecord, Principal, TokenGrant

from support import FrozenClock, Harness


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


def test_a_cached_key_is_refused_from_its_expiry_not_a_cache_ttl_later(
    harness: Harness, clock: FrozenClock
) -> None:
    from broker.auth import Authenticator

    record, presented = mint_key("acme", None, (), int(clock()), expires_at=int(clock()) + 10)
    harness.service.store.insert_key(record)
    auth = Authenticator(
        harness.service.store, admin_key=None, allow_anonymous=False, clock=clock,
        cache_ttl=3600,
    )  # fmt: skip
    principal = auth.authenticate(presented)
    assert principal.expires_at == int(clock()) + 10
    clock.advance(10)
    with pytest.raises(BrokerError) as refused:
        auth.authenticate(presented)
    assert refused.value.code == "auth.expired_key"


def test_a_cached_token_dies_when_this_process_revokes_its_key(
    harness: Harness, clock: FrozenClock
) -> None:
    """``forget`` drops the key and every token verified under it from the cache."""
    from broker.auth import Authenticator

    store = harness.service.store
    record, _ = mint_key("acme", None, (), int(clock()))
    store.insert_key(record)
    codec = BrowserTokens("s" * 32, clock)
    grant = TokenGrant(id="tok_1", bucket="default", expires_at=int(clock()) + 60)
    token = codec.sign("acme", record.id, grant)
    auth = Authenticator(
        store, admin_key=None, allow_anonymous=False, tokens=codec, clock=clock, cache_ttl=3600
    )
    principal = auth.authenticate(token)
    assert (principal.tenant, principal.key_id, principal.token) == ("acme", record.id, grant)
    assert principal.subject == "token:tok_1"
    store.revoke_key(record.id, int(clock()))
    assert auth.authenticate(token) == principal  # cached: another process would wait
    auth.forget(record.id)
    with pytest.raises(BrokerError) as refused:
        auth.authenticate(token)
    assert refused.value.code == "auth.invalid_key"


def test_a_token_of_another_tenant_than_its_key_is_refused(
    harness: Harness, clock: FrozenClock
) -> None:
    """Signed tokens are never forged, but the check costs nothing."""
    from broker.auth import Authenticator

    store = harness.service.store
    record, _ = mint_key("acme", None, ("files:read",), int(clock()))
    store.insert_key(record)
    codec = BrowserTokens("s" * 32, clock)
    grant = TokenGrant(id="tok_1", bucket="default", expires_at=int(clock()) + 60)
    auth = Authenticator(store, admin_key=None, allow_anonymous=False, tokens=codec, clock=clock)
    for tenant in ("globex", "acme"):  # the right tenant, but a key that cannot write
        with pytest.raises(BrokerError) as refused:
            auth.authenticate(codec.sign(tenant, record.id, grant))
        assert refused.value.code == "auth.invalid_key"


@pytest.mark.parametrize(
    ("principal", "subject"),
    [
        (Principal("acme", frozenset(), key_id="key_1"), "key:key_1"),
        (Principal("default", frozenset()), None),  # the client's address stands in
        (
            Principal("acme", frozenset(), key_id="key_1", token=TokenGrant("tok_9", "b", 1)),
            "token:tok_9",
        ),
    ],
)
def test_the_subject_names_the_credential(principal: Principal, subject: str | None) -> None:
    """What rate limits count by: a token apart from the key that minted it."""
    assert principal.subject == subject
