"""The metadata store: SQLAlchemy Core tables and queries (SQLite by default, or PostgreSQL)."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row
from sqlalchemy.pool import ConnectionPoolEntry

from .errors import BrokerError
from .models import LIVE_STATUSES, ApiKeyRecord, FileRecord, Status

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
_LIVE = [s.value for s in LIVE_STATUSES]
_PG_MIGRATION_LOCK = 0x62726F6B  # "brok": serialises concurrent `db upgrade` runs
IDEMPOTENCY_TTL = 24 * 3600  # seconds an Idempotency-Key replays its first answer

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("bucket", String(63), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("name", String(255), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("user_metadata", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger),
    Column("upload_id", String(1024)),
    Column("part_size", BigInteger),
    Column("proxied", Boolean, nullable=False, server_default=false()),
)
# A key is held by at most one live (pending or complete) file per tenant and bucket;
# failed and aborted files keep their row for the record but free the key.
_live = files.c.status.in_(_LIVE)
Index(
    "ux_files_live_key",
    files.c.tenant,
    files.c.bucket,
    files.c.key,
    unique=True,
    sqlite_where=_live,
    postgresql_where=_live,
)
Index("ix_files_listing", files.c.tenant, files.c.bucket, files.c.id)
Index("ix_files_expiry", files.c.status, files.c.expires_at)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("name", String(255)),
    Column("scopes", JSON, nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)
Index("ix_api_keys_tenant", api_keys.c.tenant, api_keys.c.id)

idempotency = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


# Hot statements are built once; executing them with a parameter dict skips SQLAlchemy's
# per-call construction and cache-key work (a create pays ~0.3 ms less).
_INSERT_FILE = insert(files)
_INSERT_ANSWER = insert(idempotency)
_DELETE_EXPIRED_ANSWER = delete(idempotency).where(
    idempotency.c.tenant == bindparam("tenant"),
    idempotency.c.key == bindparam("key"),
    idempotency.c.created_at < bindparam("older_than"),
)
_GET_FILE = select(files).where(files.c.tenant == bindparam("t"), files.c.id == bindparam("i"))
_GET_KEY = select(api_keys).where(api_keys.c.id == bindparam("i"))

_FILE_COLUMNS = [column.name for column in files.columns]
_KEY_COLUMNS = [column.name for column in api_keys.columns]


@dataclass(frozen=True)
class _SQLite:
    """A statement compiled once for the raw sqlite3 driver: SQL, parameter order, and the
    bind processors SQLAlchemy would apply (JSON columns are serialised by them)."""

    sql: str
    order: tuple[str, ...]
    defaults: Mapping[str, Any]
    processors: Mapping[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, statement: Any, column_keys: Sequence[str] | None = None) -> _SQLite:
        """Compile with SQLAlchemy's SQLite dialect (values bound in ``statement`` kept)."""
        from sqlalchemy.dialects import sqlite

        compiled = statement.compile(
            dialect=sqlite.dialect(), column_keys=list(column_keys) if column_keys else None
        )
        order = tuple(compiled.positiontup or ())
        if any(name.startswith("__[POSTCOMPILE") for name in order):
            raise ValueError("expanding IN parameters are not supported on the raw path")
        return cls(
            sql=compiled.string,
            order=order,
            defaults=compiled.construct_params(_check=False),
            processors=dict(compiled._bind_processors),
        )

    def args(self, params: Mapping[str, Any] | None) -> list[Any]:
        """Positional arguments: ``params`` over the values bound at compile time."""
        merged = {**self.defaults, **params} if params else self.defaults
        processors = self.processors
        return [
            processors[name](merged[name]) if name in processors else merged[name]
            for name in self.order
        ]


# The statements every create runs, for the raw driver on SQLite: SQLAlchemy's connection
# and transaction machinery costs far more than these ~20 µs queries.
_SQLITE_GET_KEY = _SQLite.compile(_GET_KEY)
_SQLITE_PREPARED: dict[int, _SQLite] = {}  # id() of a module-level statement -> compiled
for _statement, _keys in (
    (_INSERT_FILE, _FILE_COLUMNS),
    (_INSERT_ANSWER, [column.name for column in idempotency.columns]),
    (_DELETE_EXPIRED_ANSWER, None),
):
    _SQLITE_PREPARED[id(_statement)] = _SQLite.compile(_statement, _keys)


class Writer(Protocol):
    """What a write transaction's work gets: ``execute`` answers the affected row count.

    On SQLite it is the raw driver (IntegrityError is ``sqlite3.IntegrityError``), on
    PostgreSQL a SQLAlchemy connection (``sqlalchemy.exc.IntegrityError``).
    """

    def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement in the transaction; the number of rows it changed."""


class _SQLiteWriter:
    """Statements on the raw sqlite3 connection of the group commit's transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        prepared = _SQLITE_PREPARED.get(id(statement))
        if prepared is None:  # built per call (an UPDATE with its values): compile it now
            prepared = _SQLite.compile(statement, list(params) if params else None)
        return self._connection.execute(prepared.sql, prepared.args(params)).rowcount


class _SQLAlchemyWriter:
    """Statements on a SQLAlchemy connection (PostgreSQL, and SQLite migrations)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        return self._connection.execute(statement, params).rowcount


class KeyExists(Exception):
    """Another live file already holds this key in the bucket."""


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


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """WAL for concurrent readers, FULL sync so a committed row survives a crash."""
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "busy_timeout=10000",
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    """Writers take the lock up front (BEGIN IMMEDIATE) so they queue instead of deadlocking."""
    immediate = conn.get_execution_options().get("broker_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_DB_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
_BATCH_LIMIT = 128  # writes folded into one commit at most
_WRITE_TIMEOUT = 30.0  # seconds a request waits for its commit before giving up (503)


class _Outcome(Generic[T]):
    """A queued write's result or exception, set by whichever thread committed it.

    Read only after taking the commit lock its writer released (or by the writer itself),
    so no lock of its own is needed; ``concurrent.futures.Future`` would build a Condition
    per write for waiting nobody does.
    """

    __slots__ = ("_error", "_set", "_value")

    def __init__(self) -> None:
        self._set = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        """Whether a commit has settled this write."""
        return self._set

    def set_result(self, value: T) -> None:
        """The write was committed and returned ``value``."""
        self._value, self._set = value, True

    def set_exception(self, error: BaseException) -> None:
        """The write failed (it was rolled back) with ``error``."""
        self._error, self._set = error, True

    def result(self) -> T:
        """The write's return value, or raise its exception."""
        assert self._set
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


_Work = tuple[Callable[[Writer], Any], _Outcome[Any]]


def _unavailable(exc: BaseException) -> bool:
    """Whether a raw sqlite3 error means the database is unusable (503), not a bad write."""
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError)


class _GroupCommit:
    """Folds this process's concurrent write transactions into one commit (SQLite).

    SQLite has one writer at a time and each durable commit costs an fsync (~3 ms here):
    16 request threads taking turns at ``BEGIN IMMEDIATE`` queue behind each other's fsync
    and back off in the busy handler (p99 near a second under load). Instead each request
    queues its write and takes the commit lock; whoever holds it commits everything queued
    so far with one fsync, and later holders find their write already done (leader and
    followers, no extra thread, nothing added when there is no contention). A request
    returns only after the commit that holds its row, so durability is unchanged; only the
    waiting is shared. When one write of a batch fails (a key collision, say), the batch is
    rolled back and each write redone in a transaction of its own, so a failure belongs to
    its own request alone. (Savepoints per write would do the same but cost more than the
    fsync they share.)

    The transactions run on one raw sqlite3 connection of this process, used only under
    the commit lock (opened with the engine's pragmas: WAL, ``synchronous=FULL``): the
    driver's own BEGIN IMMEDIATE / COMMIT cost a few µs where SQLAlchemy's connection and
    transaction machinery cost ~100 µs per batch.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._lock_file: int | None = None
        self._lock_pid = 0

    def run(self, work: Callable[[Writer], T]) -> T:
        """Run ``work`` in the next commit; return its result or raise its exception."""
        done: _Outcome[T] = _Outcome()
        self._queue.put((work, done))
        if not self._lock.acquire(timeout=_WRITE_TIMEOUT):
            raise BrokerError("database.unavailable", "The database did not commit in time.")
        try:
            if not done.done():  # nobody took it along yet: lead a batch
                # Take the other processes' turn first, then collect: whatever queued while
                # we waited for them rides along in this commit instead of the next one.
                try:
                    with self._between_processes():
                        batch: list[_Work] = []
                        while len(batch) < _BATCH_LIMIT:
                            try:
                                batch.append(self._queue.get_nowait())
                            except queue.Empty:
                                break
                        self._commit(batch)
                except OSError as exc:  # the lock file, before any write was collected
                    raise BrokerError("database.unavailable") from exc
        finally:
            self._lock.release()
        return done.result()

    def close(self) -> None:
        """Close the writer connection and lock file (reopened on the next write)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            if self._lock_file is not None and self._lock_pid == os.getpid():
                os.close(self._lock_file)
            self._lock_file, self._lock_pid = None, 0

    def _writer(self) -> sqlite3.Connection:
        # A forked child must not share its parent's connection: open its own.
        if self._connection is None or self._pid != os.getpid():
            fairy = self._database.engine.raw_connection()  # runs the pragma hook
            connection = fairy.driver_connection
            assert isinstance(connection, sqlite3.Connection)
            fairy.detach()  # ours for good; the pool opens another when it needs one
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _commit(self, batch: list[_Work]) -> None:
        try:
            results = self._transaction([work for work, _ in batch])
        except (*_DB_ERRORS, sqlite3.Error) as exc:
            if isinstance(exc, sqlite3.Error) and not _unavailable(exc):
                self._settle_each(batch)
            else:
                self._fail(batch, exc)
            return
        except Exception:
            self._settle_each(batch)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)

    def _transaction(self, works: list[Callable[[Writer], Any]]) -> list[Any]:
        connection = self._writer()
        try:
            connection.execute("BEGIN IMMEDIATE")
            writer = _SQLiteWriter(connection)
            results = [work(writer) for work in works]
            connection.execute("COMMIT")  # returns once the WAL is fsynced (synchronous=FULL)
        except BaseException:
            self._rollback(connection)
            raise
        return results

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Queue behind other processes' batches on a file lock, not in SQLite's busy handler.

        Two gunicorn workers writing at once: the loser of ``BEGIN IMMEDIATE`` gets BUSY
        and SQLite's busy handler sleeps 1, 2, 5, 10 ... ms before it tries again, while
        all of that worker's request threads wait behind it. ``flock`` instead wakes the
        waiter the moment the other batch commits (~20 % more creates per second with two
        workers). Writers that do not take this lock (migrations, another tool) still meet
        ``busy_timeout``: it is an optimisation, never what makes writes safe. The lock is
        held for one batch; the kernel drops it if its process dies. A process frozen while
        holding it (SIGSTOP) stalls the others' writes until it resumes or dies, where the
        busy handler would have answered 503 after ``busy_timeout``.
        """
        fd = self._lock_fd()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_fd(self) -> int | None:
        if self._lock_pid != os.getpid():  # a forked child opens its own file description
            self._lock_pid, self._lock_file = os.getpid(), None
            path = self._database.engine.url.database
            if path and path != ":memory:" and not path.startswith("file:"):
                self._lock_file = os.open(f"{path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_file

    def _rollback(self, connection: sqlite3.Connection) -> None:
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        except sqlite3.Error:  # a broken connection: drop it, the next write reopens
            connection.close()
            self._connection = None

    def _settle_each(self, batch: list[_Work]) -> None:
        for item in batch:  # find whose write failed: one transaction each
            work, done = item
            try:
                done.set_result(self._transaction([work])[0])
            except (*_DB_ERRORS, sqlite3.Error) as exc:
                if _unavailable(exc) or not isinstance(exc, sqlite3.Error):
                    _GroupCommit._fail([item], exc)
                else:
                    done.set_exception(exc)
            except Exception as exc:
                done.set_exception(exc)

    @staticmethod
    def _fail(batch: list[_Work], exc: Exception) -> None:
        for _, done in batch:
            failure = BrokerError("database.unavailable")
            failure.__cause__ = exc
            done.set_exception(failure)


class _Reader:
    """A thread's own raw connection (weakly tracked: it closes when its thread ends)."""

    __slots__ = ("__weakref__", "connection", "generation", "pid")

    def __init__(self, connection: sqlite3.Connection, generation: int) -> None:
        self.connection = connection
        self.generation = generation
        self.pid = os.getpid()


class _ReadConnections:
    """One raw sqlite3 connection per thread for the hot single-statement reads (SQLite).

    Checking a connection out of SQLAlchemy's pool and back costs ~25 µs, more than the
    query; a request thread keeps its own instead (WAL: each statement reads the newest
    committed state, so nothing is cached but the connection). ``close`` retires them all.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._generation = 0

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened (with the engine's pragmas) on first use."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None or reader.generation != self._generation or reader.pid != os.getpid():
            fairy = self._database.engine.raw_connection()
            connection = fairy.driver_connection
            assert isinstance(connection, sqlite3.Connection)
            fairy.detach()
            reader = _Reader(connection, self._generation)
            with self._lock:
                self._open.add(reader)
            self._local.reader = reader
        return reader.connection

    def close(self) -> None:
        """Close every thread's connection; threads open new ones on their next read."""
        with self._lock:
            self._generation += 1
            for reader in list(self._open):
                if reader.pid == os.getpid():
                    reader.connection.close()
            self._open.clear()


class Database:
    """Engine, transactions and schema management; database failures become 503s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(url)
            event.listen(self.engine, "connect", _on_sqlite_connect)
            event.listen(self.engine, "begin", _on_sqlite_begin)
            self._group: _GroupCommit | None = _GroupCommit(self)
            self._readers: _ReadConnections | None = _ReadConnections(self)
        else:
            self.engine = create_engine(
                url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=5
            )
            # PostgreSQL commits concurrent transactions with a shared WAL flush already.
            self._group = None
            self._readers = None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(broker_write=True)
                with conn.begin():
                    yield conn
        except _DB_ERRORS as exc:
            raise BrokerError("database.unavailable") from exc

    def read(self) -> Any:
        """A read-only transaction (a consistent snapshot)."""
        return self._transaction(write=False)

    def write(self) -> Any:
        """A read-write transaction, committed when the block ends without an exception."""
        return self._transaction(write=True)

    def run_write(self, work: Callable[[Writer], T]) -> T:
        """Run a short write transaction; on SQLite it is group-committed (see above).

        ``work`` must only touch the database through its Writer: it may run in another
        thread, in a transaction shared with other requests, and be run twice (once in a
        batch that is rolled back, then alone).
        """
        if self._group is not None:
            return self._group.run(work)
        with self.write() as conn:
            return work(_SQLAlchemyWriter(conn))

    def fetch_one_raw(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        """One row of a single-statement read on this thread's driver connection (SQLite)."""
        assert self._readers is not None
        try:
            row: tuple[Any, ...] | None = self._readers.get().execute(sql, args).fetchone()
        except (*_DB_ERRORS, sqlite3.Error) as exc:
            raise BrokerError("database.unavailable") from exc
        return row

    def ping(self) -> None:
        """Raise BrokerError(database.unavailable) unless the database answers."""
        with self.read() as conn:
            conn.execute(select(literal(1)))

    def _alembic(self) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; safe to run from several processes."""
        config = self._alembic()
        with self.write() as conn:
            if not self.is_sqlite:
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def is_current(self) -> bool:
        """Whether the schema is at the newest migration."""
        heads = set(ScriptDirectory.from_config(self._alembic()).get_heads())
        with self.read() as conn:
            return set(MigrationContext.configure(conn).get_current_heads()) == heads

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
        except _DB_ERRORS as exc:
            raise BrokerError("database.unavailable") from exc
        try:
            yield got
        finally:
            try:
                if got:
                    conn.execute(select(func.pg_advisory_unlock(key)))
            except _DB_ERRORS:
                conn.invalidate()  # a dropped session has released its locks anyway
            conn.close()

    def dispose(self) -> None:
        """Close pooled connections (before fork, or at the end of a test)."""
        if self._group is not None:
            self._group.close()
        if self._readers is not None:
            self._readers.close()
        self.engine.dispose()


def _file(row: Row[Any]) -> FileRecord:
    m = row._mapping
    return FileRecord(
        id=m["id"],
        tenant=m["tenant"],
        bucket=m["bucket"],
        key=m["key"],
        name=m["name"],
        mime_type=m["mime_type"],
        size=m["size"],
        sha256=m["sha256"],
        metadata=dict(m["user_metadata"] or {}),
        status=Status(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        expires_at=m["expires_at"],
        completed_at=m["completed_at"],
        failure_code=m["failure_code"],
        upload_id=m["upload_id"],
        part_size=m["part_size"],
        proxied=bool(m["proxied"]),
    )


def _key(row: Row[Any]) -> ApiKeyRecord:
    return _key_from(row._mapping)


def _key_from(m: Any) -> ApiKeyRecord:
    scopes = m["scopes"]
    if isinstance(scopes, str):  # JSON text, read without SQLAlchemy's type processing
        scopes = json.loads(scopes)
    return ApiKeyRecord(
        id=m["id"],
        tenant=m["tenant"],
        name=m["name"],
        scopes=tuple(scopes),
        secret_hash=m["secret_hash"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class MetadataStore:
    """Every query the service runs; each call is one transaction and scoped by tenant."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- files -----------------------------------------------------------------------------

    def insert_file(self, record: FileRecord, answer: IdempotentAnswer | None = None) -> None:
        """Insert a pending file and its replayable answer (KeyExists, IdempotencyConflict)."""
        self.db.run_write(lambda writer: self._insert_file(writer, record, answer))

    @staticmethod
    def _file_params(record: FileRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "tenant": record.tenant,
            "bucket": record.bucket,
            "key": record.key,
            "name": record.name,
            "mime_type": record.mime_type,
            "size": record.size,
            "sha256": record.sha256,
            "user_metadata": record.metadata,
            "status": record.status.value,
            "failure_code": record.failure_code,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "expires_at": record.expires_at,
            "completed_at": record.completed_at,
            "upload_id": record.upload_id,
            "part_size": record.part_size,
            "proxied": record.proxied,
        }

    @staticmethod
    def _insert_file(writer: Writer, record: FileRecord, answer: IdempotentAnswer | None) -> None:
        if answer is not None:
            # An expired answer no longer binds its key: clear it so the key can be reused.
            writer.execute(
                _DELETE_EXPIRED_ANSWER,
                {
                    "tenant": answer.tenant,
                    "key": answer.key,
                    "older_than": answer.created_at - IDEMPOTENCY_TTL,
                },
            )
            try:
                writer.execute(
                    _INSERT_ANSWER,
                    {
                        "tenant": answer.tenant,
                        "key": answer.key,
                        "fingerprint": answer.fingerprint,
                        "status_code": answer.status_code,
                        "response": json.dumps(answer.response, separators=(",", ":")),
                        "created_at": answer.created_at,
                    },
                )
            except (sa_exc.IntegrityError, sqlite3.IntegrityError) as exc:
                raise IdempotencyConflict from exc
        try:
            writer.execute(_INSERT_FILE, MetadataStore._file_params(record))
        except (sa_exc.IntegrityError, sqlite3.IntegrityError) as exc:
            raise KeyExists from exc

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        """The tenant's file with this id, or None (another tenant's file is None too)."""
        with self.db.read() as conn:
            row = conn.execute(_GET_FILE, {"t": tenant, "i": file_id}).first()
        return _file(row) if row else None

    def get_file_by_key(self, tenant: str, bucket: str, key: str) -> FileRecord | None:
        """The live file holding ``key``, else the newest failed or aborted one, else None."""
        is_live = files.c.status.in_(_LIVE)
        with self.db.read() as conn:
            row = conn.execute(
                select(files)
                .where(files.c.tenant == tenant, files.c.bucket == bucket, files.c.key == key)
                .order_by(is_live.desc(), files.c.id.desc())
                .limit(1)
            ).first()
        return _file(row) if row else None

    def list_files(
        self,
        tenant: str,
        bucket: str,
        *,
        limit: int,
        after_id: str | None = None,
        prefix: str | None = None,
        status: Status | None = None,
    ) -> list[FileRecord]:
        """Newest first, at most ``limit`` files strictly older than ``after_id`` (keyset)."""
        conditions = [files.c.tenant == tenant, files.c.bucket == bucket]
        if after_id is not None:
            conditions.append(files.c.id < after_id)
        if prefix:
            conditions.append(files.c.key.like(_like_prefix(prefix), escape="\\"))
        if status is not None:
            conditions.append(files.c.status == status.value)
        query = select(files).where(and_(*conditions)).order_by(files.c.id.desc()).limit(limit)
        with self.db.read() as conn:
            return [_file(row) for row in conn.execute(query)]

    def transition(
        self, tenant: str, file_id: str, from_status: Status, to_status: Status, **changes: Any
    ) -> bool:
        """Move a file between statuses only if it is still in ``from_status`` (no lost races)."""
        statement = (
            update(files)
            .where(
                files.c.tenant == tenant,
                files.c.id == file_id,
                files.c.status == from_status.value,
            )
            .values(status=to_status.value, **changes)
        )
        return self.db.run_write(lambda writer: bool(writer.execute(statement)))

    def extend(self, tenant: str, file_id: str, expires_at: int, updated_at: int) -> bool:
        """Push a pending file's expiry out (never in) when its URLs are re-issued."""
        statement = (
            update(files)
            .where(
                files.c.tenant == tenant,
                files.c.id == file_id,
                files.c.status == Status.PENDING.value,
            )
            .values(
                expires_at=case(
                    (files.c.expires_at < expires_at, expires_at), else_=files.c.expires_at
                ),
                updated_at=updated_at,
            )
        )
        return self.db.run_write(lambda writer: bool(writer.execute(statement)))

    def delete_file(self, tenant: str, file_id: str) -> bool:
        """Remove the row; False when it was already gone."""
        statement = delete(files).where(files.c.tenant == tenant, files.c.id == file_id)
        return self.db.run_write(lambda writer: bool(writer.execute(statement)))

    def live_counts(self, tenant: str) -> dict[str, int]:
        """Pending plus complete files per bucket for one tenant."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(files.c.bucket, func.count())
                .where(files.c.tenant == tenant, files.c.status.in_(_LIVE))
                .group_by(files.c.bucket)
            ).all()
        return dict(rows)

    # -- housekeeping (broker sweep) -----------------------------------------------------------

    def expired_pending(
        self, cutoff: int, limit: int, after: tuple[int, str] | None = None
    ) -> list[FileRecord]:
        """Pending files (every tenant) that expired before ``cutoff``, oldest expiry first:
        at most ``limit`` after the keyset cursor ``(expires_at, id)`` (ix_files_expiry)."""
        conditions = [files.c.status == Status.PENDING.value, files.c.expires_at < cutoff]
        if after is not None:
            expires_at, file_id = after
            conditions.append(
                or_(
                    files.c.expires_at > expires_at,
                    and_(files.c.expires_at == expires_at, files.c.id > file_id),
                )
            )
        query = (
            select(files).where(*conditions).order_by(files.c.expires_at, files.c.id).limit(limit)
        )
        with self.db.read() as conn:
            return [_file(row) for row in conn.execute(query)]

    def expire(
        self, tenant: str, file_id: str, *, cutoff: int, failure_code: str, updated_at: int
    ) -> bool:
        """Fail a file that is still pending and still expired before ``cutoff``.

        The sweeper's claim: of several callers exactly one gets True, and a file completed,
        aborted or given fresh URLs (a later expiry) meanwhile is left alone.
        """
        statement = (
            update(files)
            .where(
                files.c.tenant == tenant,
                files.c.id == file_id,
                files.c.status == Status.PENDING.value,
                files.c.expires_at < cutoff,
            )
            .values(status=Status.FAILED.value, failure_code=failure_code, updated_at=updated_at)
        )
        return self.db.run_write(lambda writer: bool(writer.execute(statement)))

    def live_holders(
        self, tenant: str, bucket: str, keys: Collection[str]
    ) -> dict[str, tuple[Status, str | None]]:
        """For each of ``keys`` held by a live file of this tenant and bucket: that file's
        status and multipart upload id. Keys nobody holds are absent (ux_files_live_key)."""
        if not keys:
            return {}
        query = select(files.c.key, files.c.status, files.c.upload_id).where(
            files.c.tenant == tenant,
            files.c.bucket == bucket,
            files.c.key.in_(list(keys)),
            files.c.status.in_(_LIVE),
        )
        with self.db.read() as conn:
            return {row.key: (Status(row.status), row.upload_id) for row in conn.execute(query)}

    # -- idempotency -------------------------------------------------------------------------

    def get_answer(self, tenant: str, key: str, now: int) -> IdempotentAnswer | None:
        """The recorded answer for this Idempotency-Key if it is younger than 24 hours."""
        with self.db.read() as conn:
            row = conn.execute(
                select(idempotency).where(
                    idempotency.c.tenant == tenant,
                    idempotency.c.key == key,
                    idempotency.c.created_at >= now - IDEMPOTENCY_TTL,
                )
            ).first()
        if row is None:
            return None
        m = row._mapping
        return IdempotentAnswer(
            tenant=m["tenant"],
            key=m["key"],
            fingerprint=m["fingerprint"],
            status_code=m["status_code"],
            response=json.loads(m["response"]),
            created_at=m["created_at"],
        )

    def forget_answer(self, answer: IdempotentAnswer) -> None:
        """Free an Idempotency-Key whose attempt failed (only that answer: a newer one that
        another request recorded meanwhile stays)."""
        statement = delete(idempotency).where(
            idempotency.c.tenant == answer.tenant,
            idempotency.c.key == answer.key,
            idempotency.c.fingerprint == answer.fingerprint,
            idempotency.c.created_at == answer.created_at,
        )
        self.db.run_write(lambda writer: writer.execute(statement))

    # -- API keys ------------------------------------------------------------------------------

    def insert_key(self, record: ApiKeyRecord) -> None:
        """Store a new key (its hash only)."""
        statement = insert(api_keys).values(
            id=record.id,
            tenant=record.tenant,
            name=record.name,
            scopes=list(record.scopes),
            secret_hash=record.secret_hash,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
        )
        self.db.run_write(lambda writer: writer.execute(statement))

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key by id, revoked or not."""
        if self.db.is_sqlite:
            found = self.db.fetch_one_raw(_SQLITE_GET_KEY.sql, (key_id,))
            return _key_from(dict(zip(_KEY_COLUMNS, found, strict=True))) if found else None
        with self.db.read() as conn:
            row = conn.execute(_GET_KEY, {"i": key_id}).first()
        return _key(row) if row else None

    def list_keys(self, tenant: str | None = None) -> Sequence[ApiKeyRecord]:
        """Keys, oldest first, optionally of one tenant."""
        query = select(api_keys).order_by(api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.db.read() as conn:
            return [_key(row) for row in conn.execute(query)]

    def revoke_key(self, key_id: str, at: int) -> bool:
        """Mark a key revoked; False when there is no such unrevoked key."""
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return self.db.run_write(lambda writer: bool(writer.execute(statement)))
