"""Downloads: ``GET /v1/files/{id}/content`` (a 302 to a fresh signed URL), the download
URL a file carries, and the broker's own links (``/v1/downloads/{token}``), which serve
nothing until the file is complete and stream active content where storage cannot mark it
``nosniff``."""

from __future__ import annotations

import pytest

from support import ENFORCING, S3_ONLY, Harness, error_code, path_of

BODY = b"hello"


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    return harness.key("acme")


def test_download_redirects_to_a_fresh_signed_url(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, BODY, name="greeting.txt")
    response = harness.client.get(f"/v1/files/{done['id']}/content", headers=acme)
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "no-store"
    blob = harness.download(response.headers["Location"])
    assert blob.data == BODY
    if harness.backend.name == "local":  # werkzeug quotes the name only where it must
        assert blob.headers["Content-Disposition"] == "inline; filename=greeting.txt"
    else:  # S3 answers the disposition the broker signed
        assert blob.headers["Content-Disposition"] == 'inline; filename="greeting.txt"'


def test_download_of_a_pending_file_is_409(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme)
    response = harness.client.get(f"/v1/files/{created['id']}/content", headers=acme)
    assert response.status_code == 409
    assert error_code(response) == "upload.not_received"


def test_create_download_url_serves_nothing_until_complete(
    harness: Harness, acme: dict[str, str]
) -> None:
    """API.md: download_url only serves bytes once the file is complete."""
    created = harness.declare(acme)
    before_upload = harness.download(created["download_url"])
    assert (before_upload.status_code, error_code(before_upload)) == (409, "upload.not_received")
    assert harness.put(created["upload"], BODY).status_code == 200
    before_complete = harness.download(created["download_url"])
    assert (before_complete.status_code, error_code(before_complete)) == (
        409,
        "upload.not_received",
    )
    assert BODY not in before_complete.data
    harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert harness.download(created["download_url"]).data == BODY


def test_download_link_expires_and_resists_tampering(
    harness: Harness, acme: dict[str, str]
) -> None:
    created = harness.declare(acme, expires_in=60)
    link = created["download_url"]
    tampered = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    assert error_code(harness.download(tampered)) == "blob.bad_signature"
    harness.clock.advance(60 + 300)  # upload expiry plus BROKER_DOWNLOAD_TTL
    assert error_code(harness.download(link)) == "blob.expired"


def test_download_link_of_a_deleted_file_is_404(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme)
    harness.client.delete(f"/v1/files/{created['id']}", headers=acme)
    response = harness.download(created["download_url"])
    assert (response.status_code, error_code(response)) == (404, "file.not_found")


@ENFORCING
def test_download_urls_expire(harness: Harness, acme: dict[str, str]) -> None:
    """Storage refuses a download URL after BROKER_DOWNLOAD_TTL (moto checks no expiry)."""
    harness.backdate(301)
    done = harness.upload(acme, BODY)
    harness.clock.advance(301)  # BROKER_DOWNLOAD_TTL defaults to 300 s
    response = harness.download(done["download_url"])
    assert response.status_code == 403
    assert BODY not in response.data
    if harness.backend.name == "local":
        assert error_code(response) == "blob.expired"


def test_active_content_is_served_as_attachment(harness: Harness, acme: dict[str, str]) -> None:
    page = b"<script>alert(1)</script>"
    done = harness.upload(acme, page, name="x.html", mime_type="text/html")
    blob = harness.download(done["download_url"])
    assert blob.data == page
    assert blob.headers["Content-Type"] == "text/html"
    assert blob.headers["Content-Disposition"].startswith("attachment")
    assert blob.headers["X-Content-Type-Options"] == "nosniff"


def test_non_ascii_names_use_rfc6266(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, BODY, name="résumé 2026.txt")
    disposition = harness.download(done["download_url"]).headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202026.txt" in disposition


def test_range_and_conditional_downloads(harness: Harness, acme: dict[str, str]) -> None:
    """Whoever serves the bytes (the embedded store or S3) honours Range and If-None-Match."""
    data = bytes(range(100))
    done = harness.upload(acme, data, mime_type="application/octet-stream")
    partial = harness.download(done["download_url"], Range="bytes=10-19")
    assert partial.status_code == 206
    assert partial.data == data[10:20]
    assert partial.headers["Content-Range"] == "bytes 10-19/100"
    etag = harness.download(done["download_url"]).headers["ETag"]
    assert harness.download(done["download_url"], **{"If-None-Match": etag}).status_code == 304
    beyond = harness.download(done["download_url"], Range="bytes=200-300")
    assert beyond.status_code == 416
    if harness.backend.name == "local":  # S3 answers in its own format (InvalidRange)
        assert error_code(beyond) == "request.range_not_satisfiable"


@S3_ONLY
def test_active_content_is_streamed_by_the_broker_with_nosniff(harness: Harness) -> None:
    """S3 cannot add X-Content-Type-Options to its answers, so for HTML, SVG, XML and
    JavaScript the download URL is the broker's own link, which streams with the header."""
    acme = harness.key("acme")
    page = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>" * 40_000  # ~2 MiB
    done = harness.upload(acme, page, name="x.svg", mime_type="image/svg+xml")
    assert "/v1/downloads/" in done["download_url"]
    for url in (
        done["download_url"],
        harness.client.get(f"/v1/files/{done['id']}/content", headers=acme).headers["Location"],
    ):
        served = harness.download(url)
        assert served.status_code == 200
        assert served.data == page
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Disposition"] == 'attachment; filename="x.svg"'
        assert served.headers["Content-Type"] == "image/svg+xml"
    # Everything else still goes straight to the bucket.
    plain = harness.upload(acme, b"text", name="t.txt")
    assert "/v1/downloads/" not in plain["download_url"]


# -- the JSON form: the signed URL itself, for clients that cannot follow the redirect ----

BROWSER_NAVIGATION = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def download_routes(
    harness: Harness, acme: dict[str, str], data: bytes, **fields: str
) -> list[str]:
    """Upload ``data``; the paths that download it: ``/content`` and the pending file's
    ``download_url`` (the broker's own link)."""
    created = harness.declare(acme, size=len(data), **fields)
    assert harness.put(created["upload"], data).status_code == 200
    done = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert done.status_code == 200, done.json
    return [f"/v1/files/{created['id']}/content", path_of(created["download_url"])]


@pytest.mark.parametrize(
    ("query", "accept", "json_form"),
    [
        ("?redirect=false", None, True),
        ("", "application/json", True),
        ("", "application/json, text/plain;q=0.5", True),
        ("?redirect=true", "application/json", False),  # the query wins
        ("?redirect=false", BROWSER_NAVIGATION, True),
        ("", None, False),
        ("", "*/*", False),  # what fetch() sends by default
        ("", BROWSER_NAVIGATION, False),
        ("", "application/json, */*", False),  # no preference for JSON: the redirect
    ],
)
def test_download_answers_the_url_as_json_when_asked(
    harness: Harness, acme: dict[str, str], query: str, accept: str | None, json_form: bool
) -> None:
    headers = {**acme, **({"Accept": accept} if accept else {})}
    for path in download_routes(harness, acme, BODY):
        response = harness.client.get(path + query, headers=headers)
        assert response.headers["Cache-Control"] == "no-store"
        assert "Accept" in response.headers["Vary"]
        if not json_form:
            assert response.status_code == 302, response.data
            continue
        assert response.status_code == 200, response.json
        assert set(response.json) == {"url", "expires_at"}
        assert response.json["expires_at"] == harness.clock() + 300  # BROKER_DOWNLOAD_TTL
        assert harness.download(response.json["url"]).data == BODY


def test_json_form_of_a_pending_file_is_409(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme)
    for url in (f"/v1/files/{created['id']}/content", path_of(created["download_url"])):
        response = harness.client.get(url + "?redirect=false", headers=acme)
        assert (response.status_code, error_code(response)) == (409, "upload.not_received")


def test_json_form_refuses_a_redirect_value_it_does_not_know(
    harness: Harness, acme: dict[str, str]
) -> None:
    done = harness.upload(acme, BODY)
    response = harness.client.get(f"/v1/files/{done['id']}/content?redirect=no", headers=acme)
    assert (response.status_code, error_code(response)) == (422, "validation.failed")
    assert "redirect" in response.json["error"]["details"]


@S3_ONLY
def test_json_form_of_active_content_on_s3_is_a_link_that_streams(harness: Harness) -> None:
    """Where the broker streams the bytes itself, the JSON form gives a fresh broker link."""
    acme = harness.key("acme")
    page = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    for path in download_routes(harness, acme, page, name="x.svg", mime_type="image/svg+xml"):
        answer = harness.client.get(path + "?redirect=false", headers=acme).json
        assert "/v1/downloads/" in answer["url"]
        served = harness.download(answer["url"])
        assert (served.status_code, served.data) == (200, page)
        assert served.headers["X-Content-Type-Options"] == "nosniff"
