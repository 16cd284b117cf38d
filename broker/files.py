"""Reading and removing files: get (by id or key), list a bucket, bucket policies, delete,
abort a pending upload."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .auth import require
from .config import BucketPolicy
from .errors import BrokerError
from .ids import cursor_position, encode_cursor
from .models import FileRecord, FileView, Principal, Scope, Status
from .views import UseCase


@dataclass(frozen=True)
class FilePage:
    """One page of a listing, newest first."""

    data: list[FileView]
    has_more: bool
    next_cursor: str | None


@dataclass(frozen=True)
class BucketView:
    """A bucket's policy with how many live files the caller's tenant has in it."""

    policy: BucketPolicy
    file_count: int


class Files(UseCase):
    """The file use cases that neither declare nor complete."""

    def get(self, principal: Principal, file_id: str) -> FileView:
        """One file with what storage has received so far and fresh URLs."""
        require(principal, Scope.FILES_READ, token=True)
        return self.views.view(self.ctx.file(principal, file_id))

    def get_by_key(self, principal: Principal, bucket: str, key: str) -> FileView:
        """Like ``get``, addressed by bucket and key."""
        require(principal, Scope.FILES_READ)
        return self.views.view(self.ctx.file_by_key(principal, bucket, key))

    def page(
        self,
        principal: Principal,
        bucket: str,
        *,
        limit: int,
        after: str | None = None,
        prefix: str | None = None,
        status: str | None = None,
    ) -> FilePage:
        """A page of the tenant's files in a bucket, newest first, by keyset cursor."""
        require(principal, Scope.FILES_READ)
        self.ctx.bucket(bucket)
        after_id = None if after is None else cursor_position(after)
        records = self.ctx.store.list_files(
            principal.tenant,
            bucket,
            limit=limit + 1,
            after_id=after_id,
            prefix=prefix,
            status=Status(status) if status else None,
        )
        has_more = len(records) > limit
        records = records[:limit]
        return FilePage(
            data=[self.views.view(r, probe=False) for r in records],
            has_more=has_more,
            next_cursor=encode_cursor(records[-1].id) if has_more else None,
        )

    def buckets(self, principal: Principal) -> list[BucketView]:
        """Every bucket's policy with the tenant's live file count."""
        require(principal, Scope.FILES_READ)
        counts = self.ctx.store.live_counts(principal.tenant)
        return [
            BucketView(policy=p, file_count=counts.get(p.name, 0))
            for p in self.ctx.settings.buckets.values()
        ]

    def delete(self, principal: Principal, file_id: str) -> FileView:
        """Remove the object, then the row; answer the file as it was."""
        require(principal, Scope.FILES_DELETE)
        return self._delete(self.ctx.file(principal, file_id))

    def delete_by_key(self, principal: Principal, bucket: str, key: str) -> FileView:
        """Like ``delete``, addressed by bucket and key."""
        require(principal, Scope.FILES_DELETE)
        return self._delete(self.ctx.file_by_key(principal, bucket, key))

    def _delete(self, record: FileRecord) -> FileView:
        # Storage first: if it fails the row stays and a retry finishes the job. The other
        # order could leave bytes that no row points at.
        if record.status in (Status.PENDING, Status.COMPLETE):
            self.ctx.free(record)
        if not self.ctx.store.delete_file(record.tenant, record.id):
            raise BrokerError("file.not_found", f"No file {record.id} in this tenant.")
        offset = record.size if record.status is Status.COMPLETE else 0
        return FileView(record=record, offset=offset)

    def abort(self, principal: Principal, file_id: str) -> FileView:
        """Give up a pending upload: free what storage holds and mark it aborted."""
        require(principal, Scope.FILES_WRITE, token=True)
        ctx = self.ctx
        record = ctx.file(principal, file_id)
        if record.status is Status.ABORTED:
            return self.views.view(record)
        if record.status is Status.COMPLETE:
            raise BrokerError("upload.already_complete", f"File {record.id} is complete.")
        if record.status is not Status.PENDING:
            raise BrokerError("upload.not_pending", f"File {record.id} is {record.status.value}.")
        ctx.free(record)
        now = ctx.now()
        if not ctx.store.transition(
            record.tenant, record.id, Status.PENDING, Status.ABORTED, updated_at=now
        ):
            return self.views.view(ctx.file(principal, file_id))
        return self.views.view(replace(record, status=Status.ABORTED, updated_at=now))
