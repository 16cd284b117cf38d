"""The app factory's helpers."""

from __future__ import annotations

import pytest
from flask import Flask, request

from broker import request_base_url


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost",
        "EXAMPLE.com",
        "broker.example.com:443",
        "example.com:80",
        "[::1]:8000",
        "xn--bcher-kva.example",
        "a%41b.com",
        "bücher.example",
        "under_score.example",
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_request_base_url_is_host_url_without_its_slash(host: str, scheme: str) -> None:
    app = Flask(__name__)
    with app.test_request_context("/v1/files", base_url=f"{scheme}://{host}"):
        assert request_base_url() == request.host_url.rstrip("/")
