"""The metadata store: SQLAlchemy Core over SQLite (the default) or PostgreSQL.

``tables`` holds the schema, ``engine`` the Database (connections, transactions, 503s),
``groupcommit`` SQLite's shared commits, ``migrate`` Alembic, ``records`` the row/record
mapping and ``queries`` every query.
"""

from __future__ import annotations

from .engine import Database
from .queries import MetadataStore
from .records import (
    IDEMPOTENCY_TTL,
    IdempotencyConflict,
    IdempotentAnswer,
    KeyExists,
    TokenFilesExhausted,
)

__all__ = [
    "IDEMPOTENCY_TTL",
    "Database",
    "IdempotencyConflict",
    "IdempotentAnswer",
    "KeyExists",
    "MetadataStore",
    "TokenFilesExhausted",
]
