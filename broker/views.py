"""A file as the API shows it (``FileView``): the record, what storage has received, and
fresh URLs. Every use case that answers a file builds it here."""

from __future__ import annotations

from .context import Context
from .errors import BrokerError
from .metrics import DOWNLOAD_URLS, PART_URLS, UPLOAD_URLS
from .models import (
    FileRecord,
    FileView,
    MultipartInstructions,
    PartUpload,
    SignedDownload,
    Status,
    UploadInstructions,
)
from .naming import display_name, is_active_content
from .parts import missing, plan, received


class FileViews:
    """Builds file views: storage's offset while pending, signed URLs, received parts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def view(self, record: FileRecord, *, probe: bool = True) -> FileView:
        """The API's view of a record.

        Listings pass ``probe=False``: a page must not cost one storage round trip per
        pending file, so there a pending file shows offset 0 and no upload section; GET
        of the file itself asks storage.
        """
        if record.status is Status.COMPLETE:
            return FileView(
                record=record, offset=record.size, download_url=self.download_url(record)
            )
        if record.status is not Status.PENDING or not probe:
            return FileView(record=record, offset=0)
        if record.proxied:
            return FileView(record=record, offset=0)  # arriving through the broker: no URL
        live = record.expires_at > self.ctx.now()
        if record.upload_id is not None and self.ctx.multipart is not None:
            assert record.part_size is not None
            planned = plan(record.size, record.part_size)
            try:
                stored = self.ctx.multipart.list_parts(record.storage_key, record.upload_id)
            except BrokerError as busy:
                if busy.code != "upload.in_progress":
                    raise
                return FileView(record=record, offset=0)  # being joined: shown as listed
            stored = stored or []
            have = received(planned, stored)
            return FileView(
                record=record,
                offset=sum(part.size for part in have),
                upload=self.parts(record, wanted=set(missing(planned, have))) if live else None,
                parts_received=have,
            )
        info = self.ctx.storage.head(record.storage_key)
        upload = self.upload(record) if live else None
        return FileView(record=record, offset=info.size if info else 0, upload=upload)

    def upload(self, record: FileRecord) -> UploadInstructions | MultipartInstructions:
        """How to send a pending file's bytes: one signed PUT, or a signed URL per part."""
        if record.multipart:
            return self.parts(record)
        UPLOAD_URLS.inc()
        return self.ctx.storage.presign_put(
            record.storage_key,
            size=record.size,
            content_type=record.mime_type,
            sha256=record.sha256,
            expires_at=record.expires_at,
        )

    def parts(self, record: FileRecord, wanted: set[int] | None = None) -> MultipartInstructions:
        """Signed part URLs (every part, or those in ``wanted``), each binding its length."""
        assert record.upload_id is not None
        assert record.part_size is not None
        assert self.ctx.multipart is not None
        signed_parts = []
        for planned in plan(record.size, record.part_size):
            if wanted is not None and planned.number not in wanted:
                continue
            signed = self.ctx.multipart.presign_part(
                record.storage_key,
                record.upload_id,
                part_number=planned.number,
                size=planned.size,
                expires_at=record.expires_at,
            )
            signed_parts.append(
                PartUpload(
                    part_number=planned.number,
                    offset=planned.offset,
                    size=planned.size,
                    url=signed.url,
                    headers=signed.headers,
                )
            )
        PART_URLS.inc(len(signed_parts))
        return MultipartInstructions(
            method="PUT",
            part_size=record.part_size,
            parts=signed_parts,
            expires_at=record.expires_at,
        )

    def download_url(self, record: FileRecord) -> str:
        """A fresh URL for a complete file (``download``'s URL)."""
        return self.download(record).url

    def download(self, record: FileRecord) -> SignedDownload:
        """A fresh URL for a complete file and its expiry: storage's own, of exactly the
        object validated (its ETag or version), unless storage cannot serve it safely
        (active content without nosniff), then the broker's streaming link."""
        ctx = self.ctx
        until = ctx.now() + min(ctx.settings.download_ttl, ctx.policy_of(record).max_url_ttl)
        if is_active_content(record.mime_type) and not ctx.storage.serves_nosniff:
            return SignedDownload(ctx.links.sign(record.tenant, record.id, until), until)
        DOWNLOAD_URLS.inc()
        url = ctx.storage.presign_get(
            record.storage_key,
            filename=display_name(record.name),
            content_type=record.mime_type,
            attachment=is_active_content(record.mime_type),
            expires_at=until,
            etag=record.etag,
            version_id=record.version_id,
        )
        return SignedDownload(url, until)


class UseCase:
    """A use case that answers files: the shared context and the file views."""

    def __init__(self, ctx: Context, views: FileViews) -> None:
        self.ctx = ctx
        self.views = views
