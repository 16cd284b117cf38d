"""``/static/broker.js``: the browser client, served to pages on any origin without a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Client

CLIENTS = Path(__file__).resolve().parents[2] / "clients" / "js"


@pytest.mark.parametrize("name", ["broker.js", "broker-uppy.js"])
def test_the_client_modules_are_the_package_s_files(client: Client, name: str) -> None:
    response = client.get(f"/static/{name}", headers={"Origin": "https://elsewhere.example"})
    assert response.status_code == 200
    assert response.get_data() == (CLIENTS / name).read_bytes()  # one file, not a copy
    assert response.mimetype == "text/javascript"
    assert response.headers["Access-Control-Allow-Origin"] == "*"  # import() from any page
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "max-age" in response.headers["Cache-Control"]
    assert "export " in response.get_data(as_text=True)


def test_broker_js_revalidates_by_etag(client: Client) -> None:
    etag = client.get("/static/broker.js").headers["ETag"]
    again = client.get("/static/broker.js", headers={"If-None-Match": etag})
    assert (again.status_code, again.get_data()) == (304, b"")
    assert client.get("/static/broker.js", headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("path", ["/static/other.js", "/static/../pyproject.toml", "/static/"])
def test_nothing_else_is_served_under_static(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "route.not_found"
