"""Group commit (SQLite): this process's concurrent write transactions share one commit.

SQLite has one writer at a time and each durable commit costs an fsync: request threads
taking turns at ``BEGIN IMMEDIATE`` queue behind each other's fsync and back off in the
busy handler. Instead each request queues its write and takes the commit lock; whoever
holds it commits everything queued so far in one transaction (one fsync), and later
holders find their write already done. A request returns only after the commit that holds
its row, so durability is unchanged; only the waiting is shared. When one write of a batch
fails (a key collision, say), the batch is rolled back and each write redone alone, so a
failure belongs to its own request. When the database itself fails (locked past the
timeout, read-only, an I/O error), every write queued so far fails at once (503) and the
writer connection is dropped: the next write opens a fresh one, so the broker heals itself
once the database is back.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from ..errors import DatabaseUnavailable

T = TypeVar("T")
# What a database that is down, locked past the busy timeout, read-only, failing its I/O or
# out of pooled connections raises. IntegrityError is not here: it is a refused write,
# mapped by the queries.
UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
_BATCH_LIMIT = 128  # writes folded into one commit at most


class _Outcome(Generic[T]):
    """A queued write's result or exception, set by whichever thread committed it.

    Read only after taking the commit lock its writer released (or by the writer itself),
    so it needs no lock of its own.
    """

    __slots__ = ("_error", "_set", "_value", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False  # its request gave up waiting (503): not to be committed
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


_Work = tuple[Callable[[Connection], Any], _Outcome[Any]]


class GroupCommit:
    """Runs write transactions of this process in shared commits on one connection."""

    def __init__(self, engine: Engine, *, lock_path: str | None, timeout: float) -> None:
        self._engine = engine
        self._lock_path = lock_path
        self._timeout = timeout
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        # Whether the pool may hold connections SQLite opened read-only (it does so, for
        # good, with a file it cannot write): at start (reads may have opened them before
        # the first write), and after any failure. The writer then starts from a new pool.
        self._stale = True
        self._lock_file: int | None = None

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in the next commit; return its result or raise its exception.

        ``work`` must only use the connection it is given: it may run in another thread,
        in a transaction shared with other requests, and twice (in a batch that is rolled
        back, then alone).
        """
        done: _Outcome[T] = _Outcome()
        self._queue.put((work, done))
        # A leader may wait its timeout for the file lock, then for SQLite's lock, then commit;
        # when it fails it fails every write queued meanwhile, so a wait here is one turn.
        if not self._lock.acquire(timeout=2 * self._timeout + 1):
            done.cancelled = True  # a leader that has not collected it yet skips it
            raise DatabaseUnavailable("The database did not commit in time.")
        try:
            if not done.done():  # nobody took it along yet: lead a batch
                # Take the other processes' turn first, then collect: whatever queued while
                # we waited for them rides along in this commit instead of the next one.
                with self._between_processes():
                    self._commit(self._collect())
        except DatabaseUnavailable as exc:  # the file lock, before anything was collected
            done.cancelled = True
            done.set_exception(exc)
        finally:
            self._lock.release()
        return done.result()

    def close(self) -> None:
        """Close the writer connection and lock file (reopened on the next write)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            if self._lock_file is not None:
                os.close(self._lock_file)
            self._lock_file = None

    def _collect(self) -> list[_Work]:
        batch: list[_Work] = []
        while len(batch) < _BATCH_LIMIT:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not item[1].cancelled:
                batch.append(item)
        return batch

    def _commit(self, batch: list[_Work]) -> None:
        try:
            results = self._transaction([work for work, _ in batch])
        except DatabaseUnavailable as exc:  # the database failed: nobody's write is in
            # Those queued meanwhile would only wait their turn to meet the same database:
            # they answer now too (a request waits one timeout, not one per batch ahead).
            self._fail(batch, exc)
            while rest := self._collect():
                self._fail(rest, exc)
            return
        except Exception:  # a write failed: find whose, each in a transaction of its own
            for item in batch:
                work, done = item
                try:
                    done.set_result(self._transaction([work])[0])
                except DatabaseUnavailable as exc:
                    self._fail([item], exc)
                except Exception as exc:
                    done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)

    @staticmethod
    def _fail(batch: list[_Work], exc: DatabaseUnavailable) -> None:
        for _, done in batch:  # an exception of its own per request (tracebacks differ)
            failure = DatabaseUnavailable()
            failure.__cause__ = exc.__cause__
            done.set_exception(failure)

    def _transaction(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """One transaction over ``works``: an exception of a work is raised as it is; a
        failing BEGIN, ROLLBACK or COMMIT as DatabaseUnavailable."""
        if self._connection is None:
            with self._or_unavailable():
                if self._stale:
                    self._engine.dispose()  # reads still running keep theirs
                    self._stale = False
                self._connection = self._engine.connect().execution_options(broker_write=True)
        connection = self._connection
        with self._or_unavailable():
            transaction = connection.begin()  # BEGIN IMMEDIATE
        try:
            results = [work(connection) for work in works]
        except UNAVAILABLE as exc:  # the database, not this write (read-only, I/O, locked)
            self._drop()  # closing it rolls back
            raise DatabaseUnavailable from exc
        except BaseException:
            with self._or_unavailable():
                transaction.rollback()
            raise
        with self._or_unavailable():
            transaction.commit()  # returns once the WAL is fsynced (synchronous=FULL)
        return results

    @contextmanager
    def _or_unavailable(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self._drop()
            raise DatabaseUnavailable from exc

    def _drop(self) -> None:
        """Forget the writer connection after a failure (closing it rolls back whatever its
        transaction held). The next batch opens a new one from a new pool (connections
        opened during the outage may be read-only for good): the broker heals itself when
        the database is back."""
        self._stale = True
        try:
            if self._connection is not None:
                self._connection.invalidate()
                self._connection.close()
        finally:
            self._connection = None

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Queue behind other processes' batches on a file lock, not in SQLite's busy handler.

        The loser of ``BEGIN IMMEDIATE`` between two workers sleeps in SQLite's busy handler
        (1, 2, 5, 10 ... ms) while all its request threads wait behind it; polling a file
        lock wakes it within a millisecond of the other batch's commit. A process frozen
        while holding it stalls others for ``timeout`` at most, then they answer 503. Writers
        that skip this lock (migrations, other tools) still meet ``busy_timeout``: it is an
        optimisation, never what makes writes safe. The kernel drops it if its process dies.
        """
        try:
            fd = self._lock_fd()
        except OSError as exc:
            raise DatabaseUnavailable("The write lock file cannot be opened.") from exc
        if fd is None:
            yield
            return
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable("Another process holds the write lock.") from None
                time.sleep(0.0005)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_fd(self) -> int | None:
        if self._lock_file is None and self._lock_path is not None:
            self._lock_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_file
