"""``/demo``: off unless ``BROKER_DEMO=1``; its token route hands out browser tokens only."""

from __future__ import annotations

from collections.abc import Callable

from support import Harness, StorageBackend, on_backends


@on_backends("local")
def test_the_demo_is_off_unless_configured(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    off = make_harness(storage_backend)
    assert off.client.get("/demo").status_code == 404
    assert off.client.post("/demo/token").json["error"]["code"] == "route.not_found"
    on = make_harness(storage_backend, BROKER_DEMO="1")
    page = on.client.get("/demo")
    assert (page.status_code, page.mimetype) == (200, "text/html")
    assert 'from "/static/broker.js"' in page.get_data(as_text=True)
    assert "/demo" in on.client.get("/openapi.json").json["paths"]


@on_backends("local")
def test_the_demo_s_token_is_a_browser_token_and_no_more(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    demo = make_harness(storage_backend, BROKER_DEMO="1")
    minted = demo.client.post("/demo/token")
    assert minted.status_code == 200
    assert (minted.json["bucket"], minted.json["token"][:3]) == ("default", "bt_")
    auth = {"Authorization": f"Bearer {minted.json['token']}"}
    declared = demo.client.post(
        "/v1/files", json={"name": "a.txt", "size": 1, "mime_type": "text/plain"}, headers=auth
    )
    assert declared.status_code == 201
    listing = demo.client.get("/v1/buckets/default/files", headers=auth)
    assert listing.json["error"]["code"] == "auth.forbidden"
    assert demo.client.post("/v1/keys", json={"tenant": "x"}, headers=auth).status_code == 403
