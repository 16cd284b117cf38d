"""Input the server must refuse with a 4xx in the envelope, never a 500 or a silent accept:
unencodable text, loose booleans, bidi controls in names, keys S3 cannot store, and JSON
bodies over the cap however they are framed."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from broker.naming import FILE_ID_LENGTH, MAX_DECLARED_KEY

from support import Harness, error_code, on_backends

_OK: dict[str, Any] = {"name": "a.txt", "size": 5, "mime_type": "text/plain"}


def _post(harness: Harness, headers: dict[str, str], raw: str) -> Any:
    return harness.client.post(
        "/v1/files", data=raw, headers={**headers, "Content-Type": "application/json"}
    )


@on_backends("local")
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"name": "a\\ud800b", "size": 5, "mime_type": "text/plain"}', "name"),
        ('{"name": "a", "size": 5, "mime_type": "text/plain", "key": "k\\udfff"}', "key"),
        ('{"name": "a", "size": 5, "mime_type": "text/plain", "metadata": {"k": "\\ud800"}}',
         "metadata"),
        ('{"name": "a", "size": 5, "mime_type": "text/plain", "bucket": "\\ud800"}', "bucket"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_422_naming_the_field(harness: Harness, raw: str, field: str) -> None:
    response = _post(harness, harness.key(), raw)
    assert response.status_code == 422, response.json
    assert error_code(response) == "validation.failed"
    assert field in response.json["error"]["details"]


@on_backends("local")
@pytest.mark.parametrize("value", [0, 1, "yes", "true", None])
def test_booleans_are_strict(harness: Harness, value: object) -> None:
    response = _post(harness, harness.key(), json.dumps({**_OK, "multipart": value}))
    assert response.status_code == 422, response.json
    assert "multipart" in response.json["error"]["details"]


@on_backends("local")
@pytest.mark.parametrize(
    "mark", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c"]
)
def test_bidi_controls_in_names_are_refused(harness: Harness, mark: str) -> None:
    response = _post(harness, harness.key(), json.dumps({**_OK, "name": f"invoice{mark}fdp.exe"}))
    assert response.status_code == 422, response.json
    assert "name" in response.json["error"]["details"]


@on_backends("local")
def test_keys_whose_storage_key_is_over_1024_bytes_are_key_invalid(harness: Harness) -> None:
    headers = harness.key("acme")
    room = 1024 - len("acme/default/") - (FILE_ID_LENGTH + 1)  # the file's id is in it too
    assert harness.declare(headers, key="é" * (room // 2))["key"] == "é" * (room // 2)
    response = _post(harness, headers, json.dumps({**_OK, "key": "é" * (room // 2 + 1)}))
    assert (response.status_code, error_code(response)) == (422, "key.invalid")
    assert harness.declare(headers, key="k" * MAX_DECLARED_KEY)["key"] == "k" * MAX_DECLARED_KEY
    response = _post(harness, headers, json.dumps({**_OK, "key": "k" * (MAX_DECLARED_KEY + 1)}))
    assert (response.status_code, error_code(response)) == (422, "key.invalid")


@on_backends("local")
def test_generated_keys_fit_storage(harness: Harness) -> None:
    file = harness.declare(harness.key("acme"), name="\U0001f600" * 255)
    assert len(f"acme/default/{file['id']}/{file['key']}".encode()) <= 1024


@on_backends("local")
def test_a_chunked_json_body_over_the_cap_is_413(harness: Harness) -> None:
    cap = harness.app.extensions["broker"].settings.max_json_bytes
    body = json.dumps({**_OK, "metadata": {"k": "x" * 500}}).encode()
    body = body[:-1] + b" " * (cap + 10 - len(body)) + b"}"
    headers = {**harness.key(), "Content-Type": "application/json"}

    def chunked(payload: bytes) -> Any:
        return harness.client.post(
            "/v1/files",
            headers={**headers, "Transfer-Encoding": "chunked"},
            environ_base={"wsgi.input_terminated": True},
            input_stream=io.BytesIO(payload),
        )

    response = chunked(body)
    assert (response.status_code, error_code(response)) == (413, "request.too_large")
    small = json.dumps(_OK).encode()
    assert chunked(small).status_code == 201
    at_cap = small[:-1] + b" " * (cap - len(small)) + b"}"
    assert len(at_cap) == cap
    assert chunked(at_cap).status_code == 201
