"""Complete a file (``POST /v1/files/{id}/complete``): judge what storage holds against the
declaration, never the client's word; complete the file, or fail it and delete the object."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..auth import require
from ..errors import BrokerError, UploadMismatch
from ..metrics import BYTES_VALIDATED, COMPLETIONS
from ..models import FileRecord, FileView, Principal, Scope, Status
from ..storage.base import ObjectInfo
from ..views import UseCase
from .multipart import join_parts


class Completions(UseCase):
    """``complete``: validate against storage and finalise."""

    def complete(
        self, principal: Principal, file_id: str, parts: list[Mapping[str, Any]] | None = None
    ) -> FileView:
        """Check storage against the declaration; complete, or fail and delete the object."""
        require(principal, Scope.FILES_WRITE, token=True)
        ctx = self.ctx
        record = ctx.file(principal, file_id)
        if record.status is Status.COMPLETE:
            return self.views.view(record)
        if record.failure_code == "upload.expired":
            raise BrokerError("upload.expired", f"File {record.id}'s upload expired.")
        if record.status is not Status.PENDING:
            raise BrokerError(
                "upload.not_pending", f"File {record.id} is {record.status.value}; upload again."
            )
        if record.proxied:
            raise BrokerError(
                "upload.not_received",
                f"File {record.id} is still arriving through the broker; it completes itself.",
            )
        if record.multipart:
            info = join_parts(ctx, record, parts)
        else:
            if parts:
                raise BrokerError("upload.not_multipart", "This file was not uploaded in parts.")
            found = ctx.storage.head(record.storage_key)
            if found is None:
                raise BrokerError(
                    "upload.not_received",
                    f"Nothing is stored for file {record.id} yet; PUT the bytes first.",
                )
            info = found
        try:
            self._check(record, info)
        except UploadMismatch as mismatch:
            ctx.free(record)
            ctx.store.transition(
                record.tenant, record.id, Status.PENDING, Status.FAILED,
                failure_code=mismatch.code, updated_at=ctx.now(),
            )  # fmt: skip
            COMPLETIONS.labels(result=mismatch.code).inc()
            raise
        now = ctx.now()
        moved = ctx.store.transition(
            record.tenant, record.id, Status.PENDING, Status.COMPLETE,
            completed_at=now, updated_at=now, etag=info.etag, version_id=info.version_id,
        )  # fmt: skip
        if not moved:
            # Someone else completed, aborted or deleted it meanwhile: report what is true now.
            return self.views.view(ctx.file(principal, file_id))
        COMPLETIONS.labels(result="complete").inc()
        BYTES_VALIDATED.inc(record.size)
        done = replace(
            record, status=Status.COMPLETE, completed_at=now, updated_at=now,
            etag=info.etag, version_id=info.version_id,
        )  # fmt: skip
        return self.views.view(done)

    def _check(self, record: FileRecord, info: ObjectInfo) -> None:
        """Raise ``UploadMismatch`` for the first way the stored object differs."""
        if info.size != record.size:
            raise UploadMismatch(
                "upload.size_mismatch",
                f"Storage holds {info.size} bytes; {record.size} were declared.",
                declared=record.size,
                actual=info.size,
            )
        if info.content_type.lower() != record.mime_type.lower():
            raise UploadMismatch(
                "upload.type_mismatch",
                f"Storage holds {info.content_type!r}; {record.mime_type!r} was declared.",
                declared=record.mime_type,
                actual=info.content_type,
            )
        if record.sha256 is not None:
            actual = info.sha256
            if actual is None:
                # Storage did not verify it: hash the object ourselves, in bounded memory.
                hasher = hashlib.sha256()
                chunks = self.ctx.storage.iter_bytes(record.storage_key, version_id=info.version_id)
                for chunk in chunks:
                    hasher.update(chunk)
                actual = hasher.hexdigest()
            if actual != record.sha256:
                raise UploadMismatch(
                    "upload.checksum_mismatch",
                    "The stored bytes' SHA-256 differs.",
                    declared=record.sha256,
                    actual=actual,
                )
