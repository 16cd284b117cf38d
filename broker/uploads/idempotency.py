"""``Idempotency-Key``: a retried create answers what the first one did.

The first answer is recorded in the same transaction as the file it created, for 24 hours;
the same key with another request is 422 ``idempotency.mismatch``; while the first request
has no answer yet, 409 ``idempotency.in_progress``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..db import (
    IdempotencyConflict,
    IdempotentAnswer,
    KeyExists,
    MetadataStore,
    TokenFilesExhausted,
)
from ..errors import BrokerError, validation_error
from ..metrics import DECLARED
from ..models import FileRecord, Principal

MAX_KEY_LENGTH = 255


def fingerprint(idempotency_key: str | None, payload: Any, principal: Principal) -> str | None:
    """What identifies a request under an Idempotency-Key (None without a key). A browser
    token's requests are its own: it never replays an answer given to a key or another
    token (that would show it a file it did not create)."""
    if idempotency_key is None:
        return None
    if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise validation_error({"Idempotency-Key": f"Must be 1-{MAX_KEY_LENGTH} characters."})
    if principal.token is not None:
        payload = {"request": payload, "token": principal.token.id}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def recorded(
    store: MetadataStore, principal: Principal, idempotency_key: str, print_: str, now: int
) -> IdempotentAnswer | None:
    """The answer recorded under this Idempotency-Key, if any (422 for another request)."""
    answer = store.get_answer(principal.tenant, idempotency_key, now)
    if answer is not None and answer.fingerprint != print_:
        raise BrokerError("idempotency.mismatch")
    return answer


def answer(
    principal: Principal,
    idempotency_key: str | None,
    print_: str | None,
    response: Mapping[str, Any],
    now: int,
) -> IdempotentAnswer | None:
    """The answer to record with a new file under the request's Idempotency-Key, if any."""
    if idempotency_key is None or print_ is None:
        return None
    return IdempotentAnswer(
        tenant=principal.tenant,
        key=idempotency_key,
        fingerprint=print_,
        status_code=201,
        response=response,
        created_at=now,
    )


def insert_pending(
    store: MetadataStore,
    record: FileRecord,
    answer: IdempotentAnswer | None,
    max_token_files: int | None = None,
) -> bool:
    """Insert a pending file with its replayable answer; False when another request took
    the same Idempotency-Key first (the caller replays it). A key another live file holds
    is 409 ``file.key_exists``; a browser token past ``max_token_files`` is 403
    ``token.max_files_reached``."""
    try:
        store.insert_file(record, answer, max_token_files=max_token_files)
    except IdempotencyConflict:
        return False
    except TokenFilesExhausted:
        raise BrokerError(
            "token.max_files_reached",
            f"This token may declare {max_token_files} files and has declared them.",
        ) from None
    except KeyExists:
        raise BrokerError(
            "file.key_exists",
            f"Bucket {record.bucket!r} already has a file with key {record.key!r}.",
        ) from None
    DECLARED.labels(bucket=record.bucket).inc()
    return True
