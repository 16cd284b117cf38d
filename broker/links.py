"""Download links the broker signs for itself (``/v1/downloads/{token}``, no API key needed).

A link names a tenant's file and an expiry. It is what a pending file's ``download_url`` is:
it answers 409 until the file is complete (so nobody reads bytes the broker has not
checked), then redirects to a fresh storage URL. It is also how active content (HTML, SVG,
XML, JavaScript) is served from storage that cannot add ``X-Content-Type-Options: nosniff``
to its own answers (S3): the broker streams those bytes with the header itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import Clock
from .metrics import DOWNLOAD_LINKS
from .tokens import ExpiringTokens

SALT = "broker.download"


@dataclass(frozen=True)
class DownloadGrant:
    """What a verified link allows: reading one file of one tenant."""

    tenant: str
    file_id: str
    expires_at: int


class DownloadLinks:
    """Signs and verifies download links (with the broker's secret)."""

    def __init__(self, secret_key: str, base_url: Callable[[], str], clock: Clock) -> None:
        self._tokens = ExpiringTokens(secret_key, SALT, clock)
        self._base_url = base_url

    def sign(self, tenant: str, file_id: str, expires_at: int) -> str:
        """A link to the file, valid until ``expires_at``."""
        token = self._tokens.dumps({"t": tenant, "f": file_id, "e": expires_at})
        DOWNLOAD_LINKS.inc()
        return f"{self._base_url()}/v1/downloads/{token}"

    def verify(self, token: str) -> DownloadGrant:
        """403 ``blob.bad_signature`` for an altered link, ``blob.expired`` for an old one."""
        data = self._tokens.loads(token)
        return DownloadGrant(tenant=data["t"], file_id=data["f"], expires_at=data["e"])
