"""The error catalogue: every code answers an error status and is named by its area."""

from __future__ import annotations

from broker.errors import CATALOGUE


def test_every_catalogue_status_is_an_error_status() -> None:
    assert all(400 <= status < 600 for status, _ in CATALOGUE.values())
    assert all("." in code or code in ("internal", "rate_limited") for code in CATALOGUE)
