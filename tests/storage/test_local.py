"""The embedded store's tokens, with a frozen clock: what they bind, when they expire."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import BrokerError
from broker.storage.local import LocalStorage

from support import FrozenClock


@pytest.fixture
def store(tmp_path: Path, clock: FrozenClock) -> LocalStorage:
    return LocalStorage(tmp_path, "k" * 40, blob_url=_blob_url, clock=clock)


def _blob_url(token: str) -> str:
    return f"https://files.example/v1/blobs/{token}"


def _token(url: str) -> str:
    prefix = "https://files.example/v1/blobs/"
    assert url.startswith(prefix)
    return url.removeprefix(prefix)


def test_put_token_binds_every_declared_field(store: LocalStorage) -> None:
    upload = store.presign_put(
        "t/b/k", size=10, content_type="text/plain", sha256="a" * 64, expires_at=1_800_000_100
    )
    grant = store.grant_put(_token(upload.url))
    assert (grant.key, grant.size, grant.content_type, grant.sha256, grant.expires_at) == (
        "t/b/k",
        10,
        "text/plain",
        "a" * 64,
        1_800_000_100,
    )


def test_token_is_valid_until_the_second_it_expires(
    store: LocalStorage, clock: FrozenClock
) -> None:
    upload = store.presign_put(
        "k", size=1, content_type="a/b", sha256=None, expires_at=int(clock()) + 60
    )
    clock.advance(59.999)
    store.grant_put(_token(upload.url))
    clock.advance(0.001)
    with pytest.raises(BrokerError) as caught:
        store.grant_put(_token(upload.url))
    assert caught.value.code == "blob.expired"


def test_a_changed_secret_invalidates_tokens(tmp_path: Path, clock: FrozenClock) -> None:
    a = LocalStorage(tmp_path, "a" * 40, blob_url=_blob_url, clock=clock)
    b = LocalStorage(tmp_path, "b" * 40, blob_url=_blob_url, clock=clock)
    upload = a.presign_put("k", size=1, content_type="a/b", sha256=None, expires_at=2**40)
    with pytest.raises(BrokerError) as caught:
        b.grant_put(_token(upload.url))
    assert caught.value.code == "blob.bad_signature"


def test_put_and_get_tokens_are_not_interchangeable(store: LocalStorage) -> None:
    upload = store.presign_put("k", size=1, content_type="a/b", sha256=None, expires_at=2**40)
    download = store.presign_get(
        "k", filename="k", content_type="a/b", attachment=False, expires_at=2**40
    )
    with pytest.raises(BrokerError):
        store.grant_get(_token(upload.url))
    with pytest.raises(BrokerError):
        store.grant_put(_token(download))


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", ".eJw", "eyJrIjoiayJ9.AAAA"])
def test_garbage_tokens_are_bad_signatures(store: LocalStorage, garbage: str) -> None:
    with pytest.raises(BrokerError) as caught:
        store.grant_put(garbage)
    assert caught.value.code == "blob.bad_signature"


def test_every_single_character_change_is_detected(store: LocalStorage) -> None:
    token = _token(
        store.presign_put(
            "t/b/key", size=5, content_type="text/plain", sha256=None, expires_at=2**40
        ).url
    )
    for index in range(len(token)):
        replacement = "A" if token[index] != "A" else "B"
        altered = token[:index] + replacement + token[index + 1 :]
        with pytest.raises(BrokerError):
            store.grant_put(altered)


def test_urls_are_tokens_at_the_given_address(store: LocalStorage) -> None:
    urls = [
        store.presign_get("k", filename="k", content_type="a/b", attachment=False, expires_at=1),
        store.presign_put("k", size=1, content_type="a/b", sha256=None, expires_at=1).url,
        store.presign_part("k", "0" * 32, part_number=1, size=1, expires_at=1).url,
    ]
    assert all(url.startswith("https://files.example/v1/blobs/") for url in urls)


def test_objects_live_under_hashed_names_only(store: LocalStorage, tmp_path: Path) -> None:
    """Whatever a key contains, nothing is created outside the store's own directories."""
    from io import BytesIO

    for key in ("../../escape", "a/b/../../../c", "/abs/path"):
        grant = store.grant_put(
            _token(
                store.presign_put(
                    key, size=1, content_type="a/b", sha256=None, expires_at=2**40
                ).url
            )
        )
        store.receive(grant, BytesIO(b"x"))
        assert store.head(key) is not None
    names = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert names == {"objects", "tmp", "uploads"}
    assert not any((tmp_path / "uploads").iterdir())
    assert not (tmp_path.parent / "escape").exists()


def test_a_download_token_pinned_to_an_etag_serves_only_that_object(store: LocalStorage) -> None:
    from io import BytesIO

    def put(body: bytes) -> str:
        upload = store.presign_put(
            "t/b/pinned", size=len(body), content_type="a/b", sha256=None, expires_at=2**40
        )
        return store.receive(store.grant_put(_token(upload.url)), BytesIO(body)).etag

    def located(etag: str | None) -> bytes | None:
        url = store.presign_get(
            "t/b/pinned", filename="p", content_type="a/b", attachment=False,
            expires_at=2**40, etag=etag,
        )  # fmt: skip
        found = store.locate(store.grant_get(_token(url)))
        return None if found is None else found.path.read_bytes()

    first = put(b"validated")
    assert located(first) == b"validated"
    store.delete("t/b/pinned")
    put(b"something else")
    assert located(first) is None  # not the object the URL was signed for
    assert located(None) == b"something else"
