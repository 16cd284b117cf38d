"""Rows to records and back, generically over each table's column keys."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Table

from ..models import ApiKeyRecord, FileRecord, Status
from .tables import api_keys, files, idempotency

IDEMPOTENCY_TTL = 24 * 3600  # seconds an Idempotency-Key replays its first answer


class KeyExists(Exception):
    """Another live file already holds this key in the bucket."""


class TokenFilesExhausted(Exception):
    """The browser token that declares the file has declared as many as it may."""


class IdempotencyConflict(Exception):
    """Another request already recorded an answer under this Idempotency-Key."""


@dataclass(frozen=True)
class IdempotentAnswer:
    """The first answer given for an Idempotency-Key, replayed to retries."""

    tenant: str
    key: str
    fingerprint: str
    status_code: int
    response: Mapping[str, Any]
    created_at: int


def columns(table: Table) -> tuple[Any, ...]:
    """The table's columns labelled with their keys, so a row's names are the record's."""
    return tuple(column.label(column.key) for column in table.columns)


FILE_KEYS = tuple(files.columns.keys())
_KEY_KEYS = tuple(api_keys.columns.keys())
_ANSWER_KEYS = tuple(idempotency.columns.keys())


def file_from(row: Row[Any]) -> FileRecord:
    """A FileRecord from a row selected with ``columns(files)``."""
    fields = row._mapping
    return FileRecord(**{**fields, "status": Status(fields["status"])})


def file_params(record: FileRecord) -> dict[str, Any]:
    """Insert parameters for every column of ``files``."""
    return {key: getattr(record, key) for key in FILE_KEYS}


def key_from(row: Row[Any]) -> ApiKeyRecord:
    """An ApiKeyRecord from a row selected with ``columns(api_keys)``."""
    fields = row._mapping
    return ApiKeyRecord(**{**fields, "scopes": tuple(fields["scopes"])})


def key_params(record: ApiKeyRecord) -> dict[str, Any]:
    """Insert parameters for every column of ``api_keys`` (the JSON type takes the tuple)."""
    return {key: getattr(record, key) for key in _KEY_KEYS}


def answer_from(row: Row[Any]) -> IdempotentAnswer:
    """An IdempotentAnswer from a row selected with ``columns(idempotency)``."""
    fields = row._mapping
    return IdempotentAnswer(**{**fields, "response": json.loads(fields["response"])})


def answer_params(answer: IdempotentAnswer) -> dict[str, Any]:
    """Insert parameters for every column of ``idempotency_keys`` (the response as JSON
    text: the column is Text)."""
    params = {key: getattr(answer, key) for key in _ANSWER_KEYS}
    params["response"] = json.dumps(answer.response, separators=(",", ":"))
    return params
