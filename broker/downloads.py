"""Downloads: a fresh signed URL for a complete file, and following the broker's own
download links (``/v1/downloads/{token}``), which serve nothing until the file is complete.

Each answers either way the caller asks: the signed URL itself with its expiry (the JSON
form, which a browser's ``fetch()`` can follow cross-origin), or what to answer to a plain
GET (a redirect to that URL, or the bytes where the broker streams them itself)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from .auth import require
from .errors import BrokerError
from .models import FileRecord, Principal, Scope, SignedDownload, Status
from .naming import content_disposition, display_name, is_active_content
from .views import UseCase


@dataclass(frozen=True)
class Redirect:
    """Answer with a 302 to this URL."""

    url: str


@dataclass(frozen=True)
class Stream:
    """Answer with these bytes and headers (active content from storage without nosniff)."""

    chunks: Iterator[bytes]
    size: int
    content_type: str
    disposition: str


class Downloads(UseCase):
    """``signed`` for ``GET /v1/files/{id}/content``; ``link`` and ``open`` for the
    broker's own links."""

    def signed(self, principal: Principal, file_id: str) -> SignedDownload:
        """A fresh signed GET URL for a complete file, and its expiry (409 while pending)."""
        require(principal, Scope.FILES_READ, token=True)
        return self.views.download(self._complete(self.ctx.file(principal, file_id)))

    def link(self, token: str) -> SignedDownload:
        """A download link's file, as a fresh signed URL: storage's own, or for active
        content that storage cannot mark ``nosniff``, a fresh link the broker streams."""
        return self.views.download(self._resolve(token))

    def open(self, token: str) -> Redirect | Stream:
        """Resolve a download link: 409 until complete; then a redirect to storage, or the
        bytes themselves for active content that storage cannot mark ``nosniff``."""
        ctx = self.ctx
        record = self._resolve(token)
        if not (is_active_content(record.mime_type) and not ctx.storage.serves_nosniff):
            return Redirect(self.views.download_url(record))
        chunks = ctx.storage.iter_bytes(record.storage_key, version_id=record.version_id)
        try:  # open it now, so a missing object is an error answer, not a cut-off body
            first = next(chunks, b"")
        except FileNotFoundError:
            raise BrokerError(
                "file.not_found", f"File {record.id} has no bytes in storage."
            ) from None
        return Stream(
            chunks=itertools.chain([first], chunks),
            size=record.size,
            content_type=record.mime_type,
            disposition=content_disposition(display_name(record.name), attachment=True),
        )

    def _resolve(self, token: str) -> FileRecord:
        """The complete file a link names (403 altered or expired, 404 gone, 409 pending)."""
        grant = self.ctx.links.verify(token)
        record = self.ctx.store.get_file(grant.tenant, grant.file_id)
        if record is None:
            raise BrokerError("file.not_found", f"No file {grant.file_id}.")
        return self._complete(record)

    @staticmethod
    def _complete(record: FileRecord) -> FileRecord:
        if record.status is not Status.COMPLETE:
            raise BrokerError(
                "upload.not_received", f"File {record.id} is {record.status.value}, not complete."
            )
        return record
