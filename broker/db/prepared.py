"""Hot statements compiled once per dialect and run with ``Connection.exec_driver_sql``.

``Connection.execute`` looks a Core statement up in the compiled cache and runs every
parameter through a fresh execution context on each call: for a create's one INSERT that is
most of the database's share of the request (~100 k instructions). A ``Prepared`` statement
is the same Core construct compiled once by SQLAlchemy's own compiler (public API: the SQL
string, ``positiontup``, each bind's ``type.bind_processor``), so only the driver call is
left per row; it still runs on a SQLAlchemy connection, inside its transaction, and raises
SQLAlchemy's exceptions. ``tests/db/test_prepared.py`` holds its rows equal to
``Connection.execute`` of the same construct on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class Prepared:
    """A Core statement compiled for one dialect, with its parameters' processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or compiled.binds)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name in self.names:
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement with ``params`` (one value per name); rows changed."""
        processors = self.processors
        values = {
            name: processors[name](params[name]) if name in processors else params[name]
            for name in self.names
        }
        args: Any = tuple(values.values()) if self.positional else values
        return int(conn.exec_driver_sql(self.sql, args).rowcount)
