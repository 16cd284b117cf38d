"""Downloads: a fresh signed URL for a complete file, and following the broker's own
download links (``/v1/downloads/{token}``), which serve nothing until the file is complete."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from .auth import require
from .errors import BrokerError
from .models import FileRecord, Principal, Scope, Status
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
    """``url`` for ``GET /v1/files/{id}/content``; ``open`` for the broker's own links."""

    def url(self, principal: Principal, file_id: str) -> str:
        """A fresh signed GET URL for a complete file (409 while pending)."""
        require(principal, Scope.FILES_READ)
        return self.views.download_url(self._complete(self.ctx.file(principal, file_id)))

    def open(self, token: str) -> Redirect | Stream:
        """Resolve a download link: 409 until complete; then a redirect to storage, or the
        bytes themselves for active content that storage cannot mark ``nosniff``."""
        ctx = self.ctx
        grant = ctx.links.verify(token)
        record = ctx.store.get_file(grant.tenant, grant.file_id)
        if record is None:
            raise BrokerError("file.not_found", f"No file {grant.file_id}.")
        record = self._complete(record)
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

    @staticmethod
    def _complete(record: FileRecord) -> FileRecord:
        if record.status is not Status.COMPLETE:
            raise BrokerError(
                "upload.not_received", f"File {record.id} is {record.status.value}, not complete."
            )
        return record
