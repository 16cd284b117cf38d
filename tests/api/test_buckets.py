"""Buckets, keyset-paginated listings, files by key, and idempotent creates."""

from __future__ import annotations

from typing import Any

import pytest

from support import Harness, Response


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    return harness.key("acme")


def _ids(harness: Harness, headers: dict[str, str], query: str) -> tuple[list[str], dict[str, Any]]:
    page = harness.client.get(f"/v1/buckets/default/files?{query}", headers=headers)
    assert page.status_code == 200, page.json
    return [f["id"] for f in page.json["data"]], page.json


def test_buckets_list_policies_and_live_counts(harness: Harness, acme: dict[str, str]) -> None:
    harness.upload(acme, b"one")
    harness.declare(acme)  # pending counts as live
    aborted = harness.declare(acme)
    harness.client.post(f"/v1/files/{aborted['id']}/abort", headers=acme)
    body = harness.client.get("/v1/buckets", headers=acme).json
    assert body["has_more"] is False
    assert body["data"] == [
        {
            "name": "default",
            "max_size": 5 * 1024**3,
            "allowed_mime_types": ["*/*"],
            "max_url_ttl": 3600,
            "multipart_threshold": 100 * 1024**2,
            "part_size": 16 * 1024**2,
            "file_count": 2,
        }
    ]


def test_pagination_walks_every_file_once_newest_first(
    harness: Harness, acme: dict[str, str]
) -> None:
    created = [harness.declare(acme, name=f"f{i}.txt")["id"] for i in range(7)]
    seen: list[str] = []
    query = "limit=3"
    while True:
        ids, page = _ids(harness, acme, query)
        seen += ids
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        query = f"limit=3&after={page['next_cursor']}"
    assert seen == list(reversed(created))


def test_pagination_is_stable_while_files_are_added(harness: Harness, acme: dict[str, str]) -> None:
    first = [harness.declare(acme)["id"] for _ in range(4)]
    ids, page = _ids(harness, acme, "limit=2")
    newer = harness.declare(acme)["id"]  # arrives between pages: must not shift the next page
    rest, _ = _ids(harness, acme, f"limit=10&after={page['next_cursor']}")
    assert ids + rest == list(reversed(first))
    assert newer not in ids + rest


def test_listing_filters_by_prefix_and_status(harness: Harness, acme: dict[str, str]) -> None:
    a = harness.upload(acme, b"a", key="img/2026/a.png", mime_type="image/png")
    harness.declare(acme, key="img/2026/b.png", mime_type="image/png")
    harness.upload(acme, b"c", key="img_other/c.png", mime_type="image/png")
    harness.upload(acme, b"d", key="docs/d.txt")
    ids, _ = _ids(harness, acme, "prefix=img/")
    assert len(ids) == 2
    complete, _ = _ids(harness, acme, "prefix=img/&status=complete")
    assert complete == [a["id"]]
    # "_" and "%" in a prefix are literal, not LIKE wildcards.
    assert len(_ids(harness, acme, "prefix=img_")[0]) == 1
    assert _ids(harness, acme, "prefix=%25")[0] == []


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=x", "status=bogus", "after=not%20a%20cursor", "after=x"],
)
def test_bad_listing_queries_are_422(harness: Harness, acme: dict[str, str], query: str) -> None:
    response = harness.client.get(f"/v1/buckets/default/files?{query}", headers=acme)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation.failed"


def test_listing_an_unknown_bucket_is_404(harness: Harness, acme: dict[str, str]) -> None:
    response = harness.client.get("/v1/buckets/nope/files", headers=acme)
    assert (response.status_code, response.json["error"]["code"]) == (404, "bucket.not_found")


def test_get_and_delete_by_key_with_slashes(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, b"nested", key="a/b/c/d.txt")
    by_key = harness.client.get("/v1/buckets/default/files/a/b/c/d.txt", headers=acme)
    assert by_key.status_code == 200
    assert by_key.json["id"] == done["id"]
    assert harness.download(by_key.json["download_url"]).data == b"nested"
    deleted = harness.client.delete("/v1/buckets/default/files/a/b/c/d.txt", headers=acme)
    assert deleted.json["id"] == done["id"]
    gone = harness.client.get("/v1/buckets/default/files/a/b/c/d.txt", headers=acme)
    assert (gone.status_code, gone.json["error"]["code"]) == (404, "file.not_found")


def test_get_by_key_prefers_the_live_file(harness: Harness, acme: dict[str, str]) -> None:
    first = harness.declare(acme, key="k.txt")
    harness.client.post(f"/v1/files/{first['id']}/abort", headers=acme)
    second = harness.declare(acme, key="k.txt")
    by_key = harness.client.get("/v1/buckets/default/files/k.txt", headers=acme).json
    assert by_key["id"] == second["id"]


def test_get_by_key_with_percent_encoded_unicode(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, b"x", key="fotos/straße ☃.txt")
    response = harness.client.get(
        "/v1/buckets/default/files/fotos/stra%C3%9Fe%20%E2%98%83.txt", headers=acme
    )
    assert response.json["id"] == done["id"]


def test_traversal_key_in_path_is_422(harness: Harness, acme: dict[str, str]) -> None:
    response = harness.client.get("/v1/buckets/default/files/a/%2E%2E/b", headers=acme)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "key.invalid"


# -- idempotency ---------------------------------------------------------------------------


def _create(harness: Harness, headers: dict[str, str], idem: str, **body: object) -> Response:
    payload = {"name": "a.txt", "size": 5, "mime_type": "text/plain", **body}
    return harness.client.post(
        "/v1/files", json=payload, headers={**headers, "Idempotency-Key": idem}
    )


def test_retried_create_returns_the_first_answer(harness: Harness, acme: dict[str, str]) -> None:
    first = _create(harness, acme, "retry-1")
    harness.clock.advance(5)
    second = _create(harness, acme, "retry-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    listing = harness.client.get("/v1/buckets/default/files", headers=acme).json
    assert len(listing["data"]) == 1


def test_idempotency_key_with_another_body_is_422(harness: Harness, acme: dict[str, str]) -> None:
    assert _create(harness, acme, "k").status_code == 201
    response = _create(harness, acme, "k", size=6)
    assert (response.status_code, response.json["error"]["code"]) == (422, "idempotency.mismatch")


def test_idempotency_keys_are_per_tenant(harness: Harness, acme: dict[str, str]) -> None:
    globex = harness.key("globex")
    a = _create(harness, acme, "same").json
    g = _create(harness, globex, "same").json
    assert a["id"] != g["id"]


def test_idempotency_key_expires_after_a_day(harness: Harness, acme: dict[str, str]) -> None:
    first = _create(harness, acme, "daily").json
    harness.clock.advance(24 * 3600 + 1)
    later = _create(harness, acme, "daily", size=9)
    assert later.status_code == 201
    assert later.json["id"] != first["id"]


def test_failed_create_does_not_burn_the_idempotency_key(
    harness: Harness, acme: dict[str, str]
) -> None:
    harness.declare(acme, key="taken.txt")
    clash = _create(harness, acme, "k2", key="taken.txt")
    assert clash.status_code == 409
    retry = _create(harness, acme, "k2", key="free.txt")
    assert retry.status_code == 201


def test_listing_costs_no_storage_round_trips(
    harness: Harness, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of pending files must not HEAD each one (S3 would make that one RTT per row)."""
    created = harness.declare(acme)
    assert harness.put(created["upload"], b"hello").status_code == 200

    def no_head(key: str) -> None:
        raise AssertionError(f"listing asked storage about {key}")

    monkeypatch.setattr(harness.service.storage, "head", no_head)
    page = harness.client.get("/v1/buckets/default/files", headers=acme)
    assert page.status_code == 200
    assert page.json["data"][0]["status"] == "pending"
    monkeypatch.undo()
    # The file itself still reports what storage holds.
    live = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert live["offset"] == 5
