"""A prepared statement writes exactly what ``Connection.execute`` of its construct writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from broker.db import Database
from broker.db.prepared import Prepared
from broker.db.records import FILE_KEYS, file_params
from broker.db.tables import files
from broker.models import FileRecord, Status


def _row(database: Database, file_id: str) -> dict[str, Any]:
    with database.read() as conn:
        row = conn.execute(select(files).where(files.c.id == file_id)).one()
    return dict(row._mapping)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"metadata": {"ü": "名", "quote": '"x"', "empty": ""}, "sha256": "ab" * 32},
        {"status": Status.COMPLETE, "completed_at": 5, "size": 5 * 1024**4},
        {"upload_id": "u" * 300, "part_size": 16 * 2**20, "proxied": True},
        {"failure_code": "upload.size_mismatch", "status": Status.FAILED, "name": "a'b;--"},
    ],
)
def test_a_prepared_insert_stores_the_row_the_core_insert_stores(
    database: Database, new_file: Callable[..., FileRecord], fields: dict[str, Any]
) -> None:
    prepared = Prepared(insert(files), database.engine.dialect, FILE_KEYS)
    ours, theirs = new_file(**fields), new_file(**fields)
    with database.write() as conn:
        assert prepared.execute(conn, file_params(ours)) == 1
        conn.execute(insert(files), file_params(theirs))
    stored, expected = _row(database, ours.id), _row(database, theirs.id)
    for differs in ("id", "key"):
        stored.pop(differs), expected.pop(differs)
    assert stored == expected
    assert stored["user_metadata"] == ours.metadata


def test_a_prepared_insert_raises_sqlalchemys_integrity_error(
    database: Database, new_file: Callable[..., FileRecord]
) -> None:
    prepared = Prepared(insert(files), database.engine.dialect, FILE_KEYS)
    record = new_file()
    with database.write() as conn:
        prepared.execute(conn, file_params(record))
    with pytest.raises(IntegrityError), database.write() as conn:
        prepared.execute(conn, file_params(record))
