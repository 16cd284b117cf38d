"""Faults the metadata store tests inject."""

from __future__ import annotations

from typing import Any

import pytest

from broker.db import Database


def fail_next_commit(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next COMMIT fail with an I/O error (as a full or failing disk would)."""
    dialect = database.engine.dialect
    commit = dialect.do_commit
    failures = [dialect.loaded_dbapi.OperationalError("disk I/O error")]

    def failing_commit(dbapi_connection: Any) -> None:
        if failures:
            raise failures.pop()
        commit(dbapi_connection)

    monkeypatch.setattr(dialect, "do_commit", failing_commit)
