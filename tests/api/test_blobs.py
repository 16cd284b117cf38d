"""``/v1/blobs/{token}``: the HTTP layer of a self-served storage (the embedded store).

The request's headers are checked here, before storage is asked for anything; a disk that
fails under a PUT answers 503 ``storage.unavailable`` in the envelope (never a 500) and
leaves nothing visible; where storage signs its own URLs (S3) the route does not exist.
So every test here but that last one is about the embedded store and runs on it alone.
"""

from __future__ import annotations

import errno
import hashlib
import io
from typing import Any

import pytest

from support import (
    S3_ONLY,
    Harness,
    assert_envelope,
    fail_os_call,
    on_backends,
    path_of,
)

BODY = b"hello"


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    return harness.key("acme")


def _storage_must_not_be_asked(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("storage was asked to receive a body the headers lied about")

    monkeypatch.setattr(harness.local, "receive", never)


def _offset(harness: Harness, headers: dict[str, str], created: dict[str, Any]) -> int:
    return int(harness.client.get(f"/v1/files/{created['id']}", headers=headers).json["offset"])


# -- the headers are the HTTP layer's ---------------------------------------------------------


@on_backends("local")
@pytest.mark.parametrize(
    ("data", "headers", "code"),
    [
        (BODY, {"Content-Type": "text/html"}, "upload.type_mismatch"),
        (BODY, {"Content-Type": "text/plain; charset=utf-8"}, "upload.type_mismatch"),
        (BODY + b"!", {"Content-Length": "6"}, "upload.size_mismatch"),
        (BODY[:4], {"Content-Length": "4"}, "upload.size_mismatch"),
    ],
    ids=["other-type", "added-parameter", "longer", "shorter"],
)
def test_a_lie_in_the_headers_is_refused_before_storage_is_asked(
    harness: Harness,
    acme: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    headers: dict[str, str],
    code: str,
) -> None:
    """The blob PUT's own check of the headers against its grant (S3 checks its signature)."""
    created = harness.declare(acme)
    _storage_must_not_be_asked(harness, monkeypatch)
    assert_envelope(harness.put(created["upload"], data, **headers), 422, code)
    assert _offset(harness, acme, created) == 0


@on_backends("local")
def test_the_type_is_compared_normalised(harness: Harness, acme: dict[str, str]) -> None:
    """The blob PUT compares types as MIME types (S3 compares the signed header's bytes)."""
    created = harness.declare(acme, mime_type="text/plain; charset=utf-8")
    reply = harness.put(created["upload"], BODY, **{"Content-Type": "Text/Plain;charset=utf-8"})
    assert reply.status_code == 200, reply.data
    assert _offset(harness, acme, created) == len(BODY)


@on_backends("local")
def test_a_part_url_binds_a_length_but_no_type(harness: Harness, acme: dict[str, str]) -> None:
    """The blob PUT of a part: what its grant binds (S3's part URLs: test_multipart.py)."""
    created = harness.declare(acme, size=10, multipart=True)
    [part] = created["upload"]["parts"]
    url = {"method": "PUT", "url": part["url"], "headers": part["headers"]}
    assert harness.put(url, b"0123456789", **{"Content-Type": "x/anything"}).status_code == 200
    assert_envelope(harness.put(url, b"01234567890"), 422, "upload.size_mismatch")


@on_backends("local")
def test_a_download_url_of_nothing_stored_yet_is_404(harness: Harness) -> None:
    """The blob GET's answer for a key with no object, in the envelope (S3 has its own)."""
    url = harness.local.presign_get(
        "acme/default/none", filename="n", content_type="text/plain", attachment=False,
        expires_at=int(harness.clock()) + 60,
    )  # fmt: skip
    assert_envelope(harness.client.get(path_of(url)), 404, "blob.not_found")


@on_backends("local")
def test_a_client_gone_mid_body_is_a_size_mismatch(harness: Harness, acme: dict[str, str]) -> None:
    """The blob PUT of a body cut short: 422, and no temp file left on the embedded store."""
    created = harness.declare(acme)
    response = harness.client.put(
        path_of(created["upload"]["url"]),
        input_stream=io.BytesIO(BODY[:3]),  # werkzeug: ClientDisconnected at the short end
        headers=created["upload"]["headers"],
        environ_overrides={"CONTENT_LENGTH": str(len(BODY))},
    )
    assert_envelope(response, 422, "upload.size_mismatch")
    assert "ended before" in response.json["error"]["message"]
    assert list(harness.local.disk.tmp.iterdir()) == []


@on_backends("local")
def test_the_body_s_own_error_passes_storage_untranslated(harness: Harness) -> None:
    """The embedded store's ``receive``: only the disk's errors are storage's; a socket
    error while reading the body is not ``storage.unavailable``, and leaves nothing."""
    storage = harness.local
    upload = storage.presign_put(
        "acme/default/k", size=10, content_type="text/plain", sha256=None, expires_at=2**40
    )

    class Gone:
        def read(self, size: int = -1) -> bytes:
            raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        storage.receive(storage.grant_put(upload.url.rsplit("/", 1)[1]), Gone())
    assert storage.head("acme/default/k") is None
    assert list(storage.disk.tmp.iterdir()) == []


@S3_ONLY
def test_blob_urls_do_not_exist_where_storage_signs_its_own(harness: Harness) -> None:
    """S3 is no ``SelfServedStorage``: its URLs go to the bucket, and no blob route answers."""
    for method in ("PUT", "GET", "HEAD"):
        response = harness.client.open("/v1/blobs/anything", method=method, data=b"x")
        assert response.status_code == 404
        if method != "HEAD":
            assert_envelope(response, 404, "route.not_found")
            assert "local storage" in response.json["error"]["message"]


# -- a failing disk is 503 storage.unavailable, never a 500 -----------------------------------

# Each step of a PUT's way to disk, in order: the body's fsync, the blob's rename into its
# shard, the staged pointer's fsync, the pointer's link into place (the publish).
_BEFORE_THE_SWAP = [
    ("fsync", 1, errno.EIO),
    ("fsync", 1, errno.ENOSPC),
    ("rename", 1, errno.EIO),
    ("fsync", 2, errno.EIO),
    ("link", 1, errno.EROFS),
]
_IDS = ["body-fsync", "body-fsync-full", "blob-rename", "pointer-fsync", "pointer-link"]


@on_backends("local")
@pytest.mark.parametrize(("call", "nth", "code"), _BEFORE_THE_SWAP, ids=_IDS)
def test_a_put_on_a_failing_disk_is_503_and_keeps_nothing(
    harness: Harness,
    acme: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    nth: int,
    code: int,
) -> None:
    """The embedded store's disk failing at each step of a blob PUT."""
    created = harness.declare(acme, sha256=hashlib.sha256(BODY).hexdigest())
    storage = harness.local
    with monkeypatch.context() as patched:
        fail_os_call(patched, call, nth, code)
        response = harness.put(created["upload"], BODY)
    assert_envelope(response, 503, "storage.unavailable")
    if code == errno.ENOSPC:
        assert response.json["error"]["message"] == "The blob store is out of space."
    assert storage.head(f"acme/default/{created['id']}/{created['key']}") is None
    assert list(storage.disk.tmp.iterdir()) == []
    assert _offset(harness, acme, created) == 0
    complete = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert_envelope(complete, 409, "upload.not_received")
    # The disk is back: the same URL works, and the file completes with the right bytes.
    assert harness.put(created["upload"], BODY).status_code == 200
    done = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert done.status_code == 200, done.json
    assert harness.download(done.json["download_url"]).data == BODY


@on_backends("local")
def test_a_part_put_on_a_failing_disk_is_503_and_keeps_nothing(
    harness: Harness, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded store's disk failing under the blob PUT of a part."""
    created = harness.declare(acme, size=10, multipart=True)
    [part] = created["upload"]["parts"]
    url = {"method": "PUT", "url": part["url"], "headers": part["headers"]}
    with monkeypatch.context() as patched:
        fail_os_call(patched, "rename", 1, errno.EIO)  # the part into its upload's directory
        assert_envelope(harness.put(url, b"0123456789"), 503, "storage.unavailable")
    record = harness.record(created["id"])
    assert record.upload_id is not None
    assert harness.local.list_parts(record.storage_key, record.upload_id) == []
    assert list(harness.local.disk.tmp.iterdir()) == []


@on_backends("local")
def test_a_download_on_a_failing_disk_is_503(
    harness: Harness, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded store's disk failing under a blob GET."""
    done = harness.upload(acme, BODY)
    real_open = io.open

    def failing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".json"):  # the object's pointer cannot be read
            raise OSError(errno.EIO, "Input/output error")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    assert_envelope(harness.download(done["download_url"]), 503, "storage.unavailable")
