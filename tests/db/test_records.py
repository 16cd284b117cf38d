"""Rows and records map onto each other by column key, for every field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import pytest
from sqlalchemy import Table

from broker.db import IdempotentAnswer, MetadataStore
from broker.db.tables import api_keys, files, idempotency
from broker.models import ApiKeyRecord, FileRecord, Status


@pytest.mark.parametrize(
    ("record", "table"),
    [(FileRecord, files), (ApiKeyRecord, api_keys), (IdempotentAnswer, idempotency)],
)
def test_each_record_field_is_a_column_key(record: type, table: Table) -> None:
    """A new field needs its column (and a migration); the queries map both generically."""
    assert {f.name for f in fields(record)} == set(table.columns.keys())


def test_every_file_field_round_trips(
    store: MetadataStore, new_file: Callable[..., FileRecord]
) -> None:
    record = new_file(
        key="a/ü.txt",
        sha256="f" * 64,
        size=2**40,
        metadata={"colour": "blue", "ünï": "cödé"},
        status=Status.COMPLETE,
        completed_at=7,
        failure_code="none",
        upload_id="u" * 1024,
        part_size=5 * 2**20,
        proxied=True,
    )
    store.insert_file(record)
    stored = store.get_file("acme", record.id)
    assert stored == record
    assert stored is not None
    assert isinstance(stored.status, Status)
    assert stored.proxied is True


def test_every_key_field_round_trips(store: MetadataStore) -> None:
    record = ApiKeyRecord("key_1", "acme", None, ("files:read", "admin"), "h" * 64, 3, 9)
    store.insert_key(record)
    assert store.get_key("key_1") == record
    assert store.list_keys("acme") == [record]
