"""The database: engine, transactions, advisory locks; driver failures become 503s."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, literal, select
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import DatabaseUnavailable
from ..metrics import DB_ERRORS, DB_LATENCY
from . import migrate
from .groupcommit import UNAVAILABLE, GroupCommit

T = TypeVar("T")
_TIMED = {kind: (DB_LATENCY.labels(kind), DB_ERRORS.labels(kind)) for kind in ("read", "write")}
BUSY_TIMEOUT = 5.0  # seconds a SQLite writer waits for the lock before answering 503
_log = logging.getLogger("broker.db")


class Database:
    """Engine, transactions and schema management; database failures become 503s."""

    def __init__(
        self, url: str, *, busy_timeout: float = BUSY_TIMEOUT, check_schema: bool = False
    ) -> None:
        """Nothing connects here: the first transaction does (a worker boots without its
        database). ``check_schema``: refuse to serve (503) until the schema is current,
        checked on first use (``create_app``; migrations run before, see ``upgrade``)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.busy_timeout = busy_timeout
        self._schema_checked = not check_schema
        if self.is_sqlite:
            # SQLAlchemy's default QueuePool (5 kept, 10 more on demand): a pool of 16 made no
            # difference to bench/create.py (8 request threads per worker).
            self.engine: Engine = create_engine(url)
            event.listen(self.engine, "connect", self._on_sqlite_connect)
            event.listen(self.engine, "begin", _on_sqlite_begin)
            path = self.engine.url.database
            on_disk = path and path != ":memory:" and not path.startswith("file:")
            lock = f"{path}.writer-lock" if on_disk else None
            self._group: GroupCommit | None = GroupCommit(
                self.engine, lock_path=lock, timeout=busy_timeout
            )
        else:
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                pool_timeout=busy_timeout,
                connect_args={
                    "connect_timeout": max(1, int(busy_timeout)),
                    # No statement, and no wait for another session's row lock, outlasts
                    # the bound: past it PostgreSQL cancels it and the request answers 503.
                    "options": f"-c statement_timeout={_ms(busy_timeout)}"
                    f" -c lock_timeout={_ms(busy_timeout)}",
                },
            )
            # PostgreSQL shares WAL flushes between concurrent commits itself.
            self._group = None

    def _on_sqlite_connect(self, dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        """WAL for concurrent readers, FULL sync so a committed row survives a crash."""
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        # Turning a new file to WAL can answer "locked" at once, without the busy handler,
        # while other connections open it too (concurrent first upgrades): try again.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                try:
                    if write:
                        conn.execution_options(broker_write=True)
                    with conn.begin():
                        yield conn
                except UNAVAILABLE:
                    # Locked, read-only, I/O error, gone: never hand this connection out
                    # again; the next transaction opens a fresh one (self-healing).
                    if not conn.invalidated:
                        conn.invalidate()
                    raise
        except UNAVAILABLE as exc:
            raise DatabaseUnavailable from exc

    def _ready(self) -> None:
        """Once per process, on first use: refuse to serve an unmigrated schema (503)."""
        if self._schema_checked:
            return
        with self._transaction(write=False) as conn:
            current = migrate.is_current(conn)
        if not current:
            _log.error("the database schema is not current: run `broker db upgrade`")
            raise DatabaseUnavailable("The database schema is not at the newest migration.")
        self._schema_checked = True

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot)."""
        with _measured("read"):
            self._ready()
            with self._transaction(write=False) as conn:
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction, committed when the block ends without an exception
        (on SQLite it holds the one writer's lock from its start: BEGIN IMMEDIATE). Not
        group-committed: short request writes go through ``run_write``."""
        with _measured("write"):
            self._ready()
            with self._transaction(write=True) as conn:
                yield conn

    def run_write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a short write transaction; on SQLite it is group-committed
        (``work`` may then run twice and in another thread: see GroupCommit.run)."""
        if self._group is None:
            with self.write() as conn:
                return work(conn)
        with _measured("write"):
            self._ready()
            try:
                return self._group.run(work)
            except UNAVAILABLE as exc:  # a write's own statement failed (alone, see run)
                raise DatabaseUnavailable from exc

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        with self.read() as conn:
            conn.execute(select(literal(1)))

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; safe to run from several processes.

        Run once per deployment (``broker db upgrade``, or the gunicorn master before it
        forks), never by a worker as it boots."""
        with self._transaction(write=True) as conn:
            migrate.upgrade(conn)
        self._schema_checked = True

    def is_current(self) -> bool:
        """Whether the schema is at the newest migration."""
        with self._transaction(write=False) as conn:
            return migrate.is_current(conn)

    @contextmanager
    def try_lock(self, key: int) -> Iterator[bool]:
        """Hold PostgreSQL's session advisory lock ``key`` for the block if no other session
        holds it; yield whether this one got it. On SQLite (one host) always yield True:
        callers must be correct without the lock, which only saves duplicate work.
        """
        if self.is_sqlite:
            yield True
            return
        try:
            conn = self.engine.connect()
            conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        except UNAVAILABLE as exc:
            raise DatabaseUnavailable from exc
        try:
            yield got
        finally:
            try:
                if got:
                    conn.execute(select(func.pg_advisory_unlock(key)))
            except UNAVAILABLE:
                conn.invalidate()  # a dropped session has released its locks anyway
            conn.close()

    def dispose(self) -> None:
        """Close pooled connections (before fork, or at the end of a test)."""
        if self._group is not None:
            self._group.close()
        self.engine.dispose()


@contextmanager
def _measured(kind: str) -> Iterator[None]:
    """Time one transaction (``broker_db_transaction_duration_seconds``) and count it in
    ``broker_db_errors_total`` when the database was unavailable."""
    latency, errors = _TIMED[kind]
    started = time.perf_counter()
    try:
        yield
    except DatabaseUnavailable:
        errors.inc()
        raise
    finally:
        latency.observe(time.perf_counter() - started)


def _ms(seconds: float) -> int:
    """PostgreSQL's timeouts are in milliseconds (0 would mean none)."""
    return max(1, int(seconds * 1000))


def _on_sqlite_begin(conn: Connection) -> None:
    """Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
    and then writes can fail with SQLITE_BUSY at once, without waiting (no busy handler)."""
    immediate = conn.get_execution_options().get("broker_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
