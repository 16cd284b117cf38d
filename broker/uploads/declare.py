"""Declare a file (``POST /v1/files`` with JSON): record it pending and sign its URLs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..auth import require
from ..context import Context
from ..errors import BrokerError, validation_error
from ..models import FileView, Principal, Scope
from ..parts import choose_part_size
from ..views import FileViews, UseCase
from .admission import admit, new_record
from .idempotency import answer, fingerprint, insert_pending, recorded
from .tokens import confine, max_files

Render = Callable[[FileView], Mapping[str, Any]]
"""How the API shows a file: what an Idempotency-Key records and replays."""


@dataclass(frozen=True)
class Declared:
    """A create's outcome: the new file, or the first request's answer replayed verbatim."""

    view: FileView | None = None
    recorded: Mapping[str, Any] | None = None
    """The answer recorded under the request's Idempotency-Key, sent again verbatim."""
    replayed: bool = False
    """Whether this answers a retry of an earlier request (``Idempotent-Replayed``)."""


class Declarations(UseCase):
    """``declare``: check the policy, record a pending file, answer its URL pair."""

    def __init__(self, ctx: Context, views: FileViews, render: Render) -> None:
        super().__init__(ctx, views)
        self.render = render

    def declare(
        self, principal: Principal, request: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Declared:
        """Record a pending file and sign its upload and download URLs."""
        require(principal, Scope.FILES_WRITE, token=True)
        ctx = self.ctx
        now = ctx.now()
        print_ = fingerprint(idempotency_key, request, principal)
        if idempotency_key is not None and print_ is not None:
            earlier = recorded(ctx.store, principal, idempotency_key, print_, now)
            if earlier is not None:
                return Declared(recorded=earlier.response, replayed=True)
        request = confine(ctx, principal, request)

        policy = ctx.bucket(request["bucket"])
        multipart = admit(
            policy,
            size=request["size"],
            mime_type=request["mime_type"],
            multipart=bool(request.get("multipart")),
        )
        if multipart and ctx.multipart is None:
            raise validation_error({"multipart": "This storage cannot take uploads in parts."})
        ttl = min(request.get("expires_in", ctx.settings.upload_ttl), policy.max_url_ttl)
        record = new_record(ctx, principal, policy, request, ttl=ttl)
        if multipart:
            assert ctx.multipart is not None
            record = replace(record, part_size=choose_part_size(record.size, policy.part_size))
            upload_id = ctx.multipart.start_multipart(
                record.storage_key, content_type=record.mime_type
            )
            record = replace(record, upload_id=upload_id)
        view = FileView(
            record=record,
            offset=0,
            upload=self.views.upload(record),
            parts_received=[] if multipart else None,
            # A link through the broker: it serves nothing until the file is complete.
            download_url=ctx.links.sign(
                record.tenant,
                record.id,
                min(record.expires_at + ctx.settings.download_ttl, now + policy.max_url_ttl),
            ),
        )
        recording = (  # rendered only to be recorded, under an Idempotency-Key
            None
            if print_ is None
            else answer(principal, idempotency_key, print_, self.render(view), now)
        )
        try:
            inserted = insert_pending(ctx.store, record, recording, max_files(principal))
        except BaseException:
            ctx.abandon_upload(record)  # leave no open upload behind a failed create
            raise
        if inserted:
            return Declared(view=view)
        ctx.abandon_upload(record)  # the first request's answer stands, not ours
        assert idempotency_key is not None
        assert print_ is not None
        earlier = recorded(ctx.store, principal, idempotency_key, print_, now)
        if earlier is None:
            raise BrokerError("idempotency.in_progress")
        return Declared(recorded=earlier.response, replayed=True)
