"""Proxied upload (``POST /v1/files`` with ``multipart/form-data``): the bytes come through
the broker, for clients that cannot PUT to storage themselves.

The same checks as a declaration (bucket, size and type policy, key) run before a byte is
read; a pending row reserves the key; storage takes the stream in bounded memory and
refuses a body over the bucket's limit, of another ``size`` or SHA-256; only then is the
file complete. On any failure (a lie, a cut-off body, storage down) nothing is left in
storage and the file is ``failed``, never pending.

With an ``Idempotency-Key``, a retry of an upload that completed answers that file again;
one still in progress is 409; one that failed does not bind the key, so the retry is a
fresh attempt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from ..auth import require
from ..errors import BrokerError, validation_error
from ..metrics import BYTES_VALIDATED, COMPLETIONS
from ..models import FileRecord, Principal, Scope, Status
from ..storage import Expected
from ..views import UseCase
from .admission import admit, new_record
from .declare import Declared
from .idempotency import answer, fingerprint, insert_pending, recorded
from .tokens import confine, max_files, max_size

log = logging.getLogger("broker.uploads")


class ProxiedUploads(UseCase):
    """``receive``: store a file whose bytes stream through the broker; answer it complete."""

    def receive(
        self,
        principal: Principal,
        request: Mapping[str, Any],
        chunks: Iterable[bytes],
        idempotency_key: str | None = None,
    ) -> Declared:
        """Check the declaration, reserve the key, stream ``chunks`` to storage, complete."""
        require(principal, Scope.FILES_WRITE, token=True)
        ctx = self.ctx
        streaming = ctx.streaming
        if streaming is None:
            raise validation_error({"file": "This storage cannot take proxied uploads."})
        now = ctx.now()
        print_ = fingerprint(idempotency_key, {"form": request}, principal)
        if idempotency_key is not None and print_ is not None:
            earlier = self._replay(principal, idempotency_key, print_, now)
            if earlier is not None:
                return earlier

        request = confine(ctx, principal, {**request, "metadata": {}})
        policy = ctx.bucket(request["bucket"])
        declared_size: int | None = request.get("size")
        admit(policy, size=declared_size or 0, mime_type=request["mime_type"])
        # The reaper may fail a pending file past its expiry; a body still arriving then is
        # refused at the end (below) rather than completing a file the reaper gave up.
        ttl = min(ctx.settings.upload_ttl, policy.max_url_ttl)
        record = new_record(ctx, principal, policy, request, ttl=ttl, proxied=True)
        # What binds the key is the file; a replay answers the file as it is then.
        stub = {"id": record.id, "object": "file", "status": Status.PENDING.value}
        recording = answer(principal, idempotency_key, print_, stub, now)
        if not insert_pending(ctx.store, record, recording, max_files(principal)):
            assert idempotency_key is not None
            assert print_ is not None
            earlier = self._replay(principal, idempotency_key, print_, now)
            if earlier is None:
                raise BrokerError("idempotency.in_progress")
            return earlier

        try:
            info = streaming.put_stream(
                record.storage_key,
                self._keep_pending(record, chunks),
                Expected(
                    record.mime_type,
                    max_size(principal, policy.max_size),
                    declared_size,
                    record.sha256,
                ),
            )
        except BaseException as exc:
            self._fail(record, exc)
            raise
        now = ctx.now()
        done = replace(
            record,
            size=info.size,
            sha256=info.sha256 or record.sha256,
            status=Status.COMPLETE,
            completed_at=now,
            updated_at=now,
            etag=info.etag,
            version_id=info.version_id,
        )
        moved = ctx.store.transition(
            record.tenant, record.id, Status.PENDING, Status.COMPLETE,
            size=done.size, sha256=done.sha256, completed_at=now, updated_at=now,
            etag=done.etag, version_id=done.version_id,
        )  # fmt: skip
        if not moved:
            # Deleted, aborted or reaped while the bytes arrived: keep none of them.
            ctx.storage.delete(record.storage_key)
            COMPLETIONS.labels(result="upload.not_pending").inc()
            raise BrokerError(
                "upload.not_pending",
                f"File {record.id} was deleted or expired while its bytes arrived.",
            )
        COMPLETIONS.labels(result="complete").inc()
        BYTES_VALIDATED.inc(done.size)
        return Declared(view=self.views.view(done))

    def _keep_pending(self, record: FileRecord, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` on, pushing the file's expiry out while they keep coming, so a
        slow but live upload is not taken for an abandoned one."""
        ttl = record.expires_at - record.created_at
        expires_at = record.expires_at
        for chunk in chunks:
            now = self.ctx.now()
            if now > expires_at - ttl // 2:
                expires_at = now + ttl
                self.ctx.store.extend(record.tenant, record.id, expires_at, updated_at=now)
            yield chunk

    def _fail(self, record: FileRecord, exc: BaseException) -> None:
        """After a refused or interrupted upload: the file is failed, and storage holds
        nothing (the adapter promises that; a storage error may leave it unsure)."""
        code = exc.code if isinstance(exc, BrokerError) else "upload.interrupted"
        if code == "storage.unavailable":
            with contextlib.suppress(BrokerError):
                self.ctx.storage.delete(record.storage_key)
        try:
            self.ctx.store.transition(
                record.tenant, record.id, Status.PENDING, Status.FAILED,
                failure_code=code, updated_at=self.ctx.now(),
            )  # fmt: skip
        except Exception:  # the original error is the answer; the reaper fails it later
            log.exception("could not mark file %s failed", record.id)
        COMPLETIONS.labels(result=code).inc()

    def _replay(
        self, principal: Principal, idempotency_key: str, print_: str, now: int
    ) -> Declared | None:
        """The file an earlier proxied upload with this key made, if it completed."""
        earlier = recorded(self.ctx.store, principal, idempotency_key, print_, now)
        if earlier is None:
            return None
        record = self.ctx.store.get_file(principal.tenant, str(earlier.response.get("id")))
        if record is not None and record.status is Status.COMPLETE:
            return Declared(view=self.views.view(record), replayed=True)
        if record is not None and record.status is Status.PENDING:
            raise BrokerError("idempotency.in_progress")
        # It failed (or is gone): that attempt stored nothing, so this one starts afresh.
        self.ctx.store.forget_answer(earlier)
        return None
