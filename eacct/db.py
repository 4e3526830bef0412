"""Database wiring: the declarative base, engine creation for SQLite and PostgreSQL, the session factory with
SQLite's in-process write queue, the unit of work, and `after_commit` for work that must happen only once a
transaction's changes are durable."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction
from sqlalchemy.types import TypeDecorator

from eacct.sqlite_driver import OneTripConnection, one_trip_dbapi

__all__ = [
    "PING_IDLE_SECONDS", "READ_ONLY", "SQLITE_POOL", "Base", "NestedWriteError", "SessionFactory", "UtcDateTime",
    "WriteQueue", "after_commit", "create_engine", "dialect_insert", "driver_placeholders", "engine_for", "execute_together",
    "in_writing_unit", "make_session_factory", "ping_idle_connections", "read_rows", "read_scalars", "unit_of_work",
    "utcnow",
]

log = logging.getLogger("eacct.db")

# Execution option and session.info flag of a read-only unit of work (see `unit_of_work`).
READ_ONLY = "eacct_read_only"
# Execution option of a single read (`read_rows`): no BEGIN at all, the statement is its own snapshot.
_ONE_STATEMENT = "eacct_one_statement"
# Execution option of a writing unit whose commit need not wait for the disk (`unit_of_work(durable=False)`).
_NOT_DURABLE = "eacct_not_durable"
# PostgreSQL connections idle this long are pinged before use (see `ping_idle_connections`).
PING_IDLE_SECONDS = 5.0
_IDLE_SINCE = "eacct_idle_since"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every mapped class; constraint names are fixed so migrations stay comparable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite gives naive ones back, which are read as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime")
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


# Connections an SQLite engine opens at most (on demand) and keeps.
SQLITE_POOL = 15


def create_engine(database_url: str, *, schema: str | None = None,
                  ping_idle_seconds: float = PING_IDLE_SECONDS) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and write-locking transactions for writers.

    With SQLite every transaction that may write starts with BEGIN IMMEDIATE, so two writers queue instead of
    failing halfway with "database is locked"; transactions here are short (no transaction spans a transfer).
    Writers of one process queue before that, in the session factory's `WriteQueue`; the busy timeout is for
    writers of other processes.
    Read-only units of work (`unit_of_work(..., read_only=True)`) start with a deferred BEGIN instead: under WAL
    they read a snapshot without taking, or waiting for, the write lock.
    `schema` (PostgreSQL only) puts every table in that schema, which lets test runs not see each other.
    PostgreSQL connections idle `ping_idle_seconds` or more are checked before use (`ping_idle_connections`).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # Up to SQLITE_POOL connections, each kept once opened: with SQLAlchemy's default (5 kept, 10 more for a
        # burst) a busy server closed and reopened a connection several times a second (a thread, a file open and
        # five PRAGMAs each; bench.load at 200 req/s: ~7 a second). Last in, first out: a quiet server keeps using
        # the few connections (threads, page caches) that are warm.
        engine = create_async_engine(url, connect_args={"timeout": 60}, module=one_trip_dbapi(),
                                     pool_size=SQLITE_POOL, max_overflow=0, pool_use_lifo=True)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            # Each pooled connection keeps a private page cache (2 MB by default, up to 15 connections); the
            # operating system's cache of the file is shared by all of them, so a miss here costs one pread.
            # 512 KiB holds the hot pages of the listings and keeps a 1 GB upload's lookups from filling
            # several caches with chunk-index pages read once (bench/transfer.py: ~3 MB less peak RSS).
            cursor.execute("PRAGMA cache_size=-512")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection) -> None:
            options = connection.get_execution_options()
            if options.get(_ONE_STATEMENT, False):
                return  # sqlite3 runs the statement in autocommit mode: a snapshot of its own
            if options.get(READ_ONLY, False):
                statements = ("BEGIN",)
            else:
                # Set for every writing transaction, so none inherits a non-durable one's setting.
                synchronous = "NORMAL" if options.get(_NOT_DURABLE, False) else "FULL"
                statements = (f"PRAGMA synchronous={synchronous}", "BEGIN IMMEDIATE")
            driver_connection = connection.connection.dbapi_connection
            if isinstance(driver_connection, OneTripConnection):
                driver_connection.defer_begin(*statements)  # sent with the transaction's first statement
            else:
                for statement in statements:
                    connection.exec_driver_sql(statement)

        return engine
    connect_args = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, pool_size=10, max_overflow=10, connect_args=connect_args)
    ping_idle_connections(engine, ping_idle_seconds)
    return engine


def ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """SQLAlchemy's pool_pre_ping, for connections that sat in the pool `idle_seconds` or more only.

    pool_pre_ping costs three round trips on asyncpg (BEGIN, ping, ROLLBACK) on every checkout, more than a
    list request's own queries. A connection used moments ago is alive; one that sat idle (across a database
    restart, a proxy's idle cut) is pinged, and a dead one is replaced before anyone uses it. A connection
    that died in the last few seconds fails its request with 503 busy, and the pool then replaces every
    connection older than the failure."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        if dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or in steady use
        dialect = sync_engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError("idle connection found dead; the pool reconnects") from exc
            raise


def engine_for(settings) -> AsyncEngine:
    """The engine `settings` (an `eacct.config.Settings`) describe."""
    return create_engine(settings.database_url, schema=settings.database_schema or None)


class NestedWriteError(RuntimeError):
    """A task opened a writing unit of work inside another of its own: on SQLite that waits for itself."""


# The task inside a writing unit of work. A context variable is inherited by tasks started inside the unit,
# so `in_writing_unit` also compares the task: only the one that opened the unit is in it.
_WRITING: ContextVar[asyncio.Task | None] = ContextVar("eacct_writing_task", default=None)


def in_writing_unit() -> bool:
    """Whether the running task is inside a writing unit of work (where nothing slow may be awaited: argon2,
    a transfer; on SQLite the unit holds the process's write turn)."""
    task = _WRITING.get()
    return task is not None and task is asyncio.current_task()


class WriteQueue:
    """SQLite's writers of one process, served one at a time in arrival order (a FIFO asyncio lock per event
    loop), so they never busy-sleep against each other.

    SQLite lets one transaction write at a time; a BEGIN IMMEDIATE that finds the lock taken sleeps in the
    busy handler with growing back-off (up to 100 ms a try) and can lose the race to a later writer again and
    again, so a small write could wait hundreds of ms behind a stream of others. Writers queued here wait on
    an asyncio future instead, holding no pooled connection, and start the moment the one before them ends.
    Other processes (another `eacct serve` worker, the CLI) still meet at SQLite's lock and its busy timeout.
    """

    def __init__(self) -> None:
        # One lock per event loop: an asyncio lock belongs to one loop, and an engine is normally used by
        # one; loops of other threads queue among themselves and meet at SQLite's lock like other processes.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLock] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def _lock(self) -> _LoopLock:
        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = _LoopLock()
        return lock

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for this task's turn to write and hold it for the block (`unit_of_work` takes it, and refuses
        to nest: a task asking twice would wait for itself for ever)."""
        lock = self._lock()
        # asyncio.Lock is FIFO and does not let a newcomer barge past waiters; a waiter cancelled (even just
        # after being woken) leaves the queue and passes the turn on.
        lock.waiting += 1
        try:
            await lock.lock.acquire()
        finally:
            lock.waiting -= 1
        try:
            yield
        finally:
            lock.lock.release()

    def waiting(self) -> int:
        """How many writers of the running loop wait for their turn (for tests and diagnostics)."""
        return self._lock().waiting


class _LoopLock:
    __slots__ = ("lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0


class SessionFactory(async_sessionmaker[AsyncSession]):
    """The session factory, carrying the write queue its writing units of work wait in (SQLite only; None on
    PostgreSQL, whose writers wait for row locks, not for one database-wide lock)."""

    def __init__(self, engine: AsyncEngine, write_queue: WriteQueue | None, **kw) -> None:
        super().__init__(engine, **kw)
        self.write_queue = write_queue
        self.dialect = engine.dialect


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded objects usable after commit; on SQLite their writers queue in arrival order."""
    queue = WriteQueue() if engine.dialect.name == "sqlite" else None
    return SessionFactory(engine, queue, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(factory: SessionFactory, *, read_only: bool = False, durable: bool = True
                       ) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block ends normally, roll back on any exception. Work registered
    with `after_commit` runs once the commit has succeeded, and is dropped on rollback.

    `read_only=True` is for units that only read: on SQLite they do not take the write lock, so they neither
    wait for writers nor make writers wait (a deferred BEGIN: one snapshot for the unit); on PostgreSQL they run
    without BEGIN/COMMIT. Any attempt to write in one raises RuntimeError (a deferred SQLite transaction that
    starts writing late can fail with "database is locked", so it must not happen).
    A writing unit on SQLite first waits for its turn in the factory's `WriteQueue` (from before BEGIN
    IMMEDIATE until the commit or rollback has ended): keep it short, and never open a second writing unit
    inside one in the same task (NestedWriteError, on PostgreSQL too, so tests on either database find it).
    `durable=False` is for writes about work in progress that nothing visible depends on yet (an upload's lease,
    pending packs and rows, claims, heartbeats): on SQLite their commit does not wait for the disk while it holds
    the write lock (synchronous=NORMAL under WAL: still atomic; the next durable commit, whose fsync covers the
    whole log, carries them to the disk; a power cut before that may undo them whole, never in part)."""
    if read_only:
        async with factory(execution_options={READ_ONLY: True}, info={READ_ONLY: True}) as session:
            async with session.begin():
                if session.bind.dialect.name == "postgresql":
                    # Under READ COMMITTED each statement reads its own snapshot, inside BEGIN … COMMIT or not:
                    # without them a read costs two round trips less and sees exactly the same.
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                yield session
        return
    if in_writing_unit():
        raise NestedWriteError("a writing unit of work was opened inside another one of the same task; "
                               "finish the first before opening the second")
    marker = _WRITING.set(asyncio.current_task())
    try:
        options = {} if durable else {"execution_options": {_NOT_DURABLE: True}}
        if factory.write_queue is None:
            async with factory(**options) as session:
                async with session.begin():
                    yield session
        else:
            async with factory.write_queue.turn():
                async with factory(**options) as session:
                    async with session.begin():
                        yield session
    finally:
        _WRITING.reset(marker)


def driver_placeholders(dialect, count: int) -> str:
    """`count` positional parameter markers in the driver's own style, for SQL handed to it as it is
    (`exec_driver_sql`): `?` for sqlite3, `$1`… for asyncpg."""
    if dialect.paramstyle == "qmark":
        return ", ".join("?" * count)
    if dialect.paramstyle == "numeric_dollar":
        return ", ".join(f"${number}" for number in range(1, count + 1))
    raise NotImplementedError(f"parameter style {dialect.paramstyle}")


def driver_list_markers(dialect, singles: int, listed: int) -> list[str]:
    """Markers for `singles` single values followed by one IN list of `listed` values, in the driver's style:
    the single markers, then the list's markers joined by commas (the parameters go in that order)."""
    markers = driver_placeholders(dialect, singles + listed).split(", ", singles)
    return markers if listed else [*markers, ""]


async def execute_together(session: AsyncSession, statements: list[tuple[str, tuple | list[tuple]]]) -> list[int]:
    """Run write statements (SQL for the driver as it is, with `driver_placeholders`; a tuple of parameters, or a
    list of them for one execution per row) in order; their row counts, or for a query its first row's first value.

    On SQLite they travel to the connection's thread together: a unit of work holding the write lock pays one trip
    through a busy event loop for all of them, not one each. On PostgreSQL they run one after another."""
    if session.info.get(READ_ONLY):
        raise RuntimeError("a read-only unit of work tried to write")
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).dbapi_connection
    if isinstance(raw, OneTripConnection):
        return await raw.run_together(statements)
    results = []
    for operation, parameters in statements:
        result = await connection.exec_driver_sql(operation, parameters)
        results.append(result.scalar() if result.returns_rows else result.rowcount)
    return results


async def read_rows(factory: SessionFactory, statement, parameters: dict | tuple | None = None) -> list[Sequence]:
    """Every row of one read statement, which is its own snapshot: one round trip to the database, without
    BEGIN or COMMIT, on SQLite (no write lock either) as on PostgreSQL. For hot reads that need no consistency
    with another statement (an upload's chunk lookups)."""
    options = {READ_ONLY: True, _ONE_STATEMENT: True}
    async with factory(execution_options=options, info={READ_ONLY: True}) as session:
        postgresql = session.bind.dialect.name == "postgresql"
        connection = await session.connection(
            execution_options={"isolation_level": "AUTOCOMMIT"} if postgresql else None)
        if isinstance(statement, str):  # SQL for the driver as it is, with positional `driver_placeholders`
            result = await connection.exec_driver_sql(statement, tuple(parameters or ()))
        else:
            result = await session.execute(statement, parameters)
        # Rows as SQLAlchemy makes them (tuple-like, built natively): a download locates ~130k chunks per GB, and a
        # tuple() of each row cost its event loop a tenth of its time.
        return result.fetchall()


async def read_scalars(factory: SessionFactory, statement, parameters: dict | tuple | None = None) -> list:
    """The first column of every row of one read statement (see `read_rows`)."""
    return [row[0] for row in await read_rows(factory, statement, parameters)]


@event.listens_for(Session, "before_flush")
def _refuse_flush_when_read_only(session: Session, _context, _instances) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a read-only unit of work tried to write")


@event.listens_for(Session, "do_orm_execute")
def _refuse_dml_when_read_only(state) -> None:
    if state.session.info.get(READ_ONLY) and (state.is_insert or state.is_update or state.is_delete):
        raise RuntimeError("a read-only unit of work tried to write")


# ------------------------------------------------------------------------------------------ after commit

_AFTER_COMMIT = "eacct.after_commit"


def after_commit(session: AsyncSession | Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the transaction `session` is in has committed; never if it rolls back.

    For side effects outside the database (a WeChat message, …) that must follow the event they tell about
    exactly: a rolled-back event sends nothing, and nothing slow happens while the transaction holds locks.

    How: callbacks wait in `session.info`, each tagged with the (possibly nested) transaction that was
    current when it was registered. SQLAlchemy's session events do the rest, whatever commits the session
    (`unit_of_work`, an explicit `commit()`):
    - `after_commit` of the outermost transaction runs them, in registration order (a savepoint's release
      also fires that event; it is ignored while the outer transaction is still open);
    - rolling back a savepoint drops the callbacks registered inside it (or inside savepoints within it);
    - the end of the outermost transaction drops whatever is left (a rollback, or a session closed without
      committing).

    Callbacks run synchronously inside `commit()`, on the thread that commits (for an `AsyncSession`, the
    event loop's): they must be quick and must not block; start background work from them rather than
    doing it. An exception from a callback is logged and does not undo or fail the commit (it has happened).
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    if transaction is None:
        raise RuntimeError("after_commit needs a session inside a transaction")
    sync.info.setdefault(_AFTER_COMMIT, []).append((transaction, callback))


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    root = session.get_transaction()
    if root is not None and root.is_active:
        return  # a savepoint was released; the outer transaction may still roll back
    for _, callback in session.info.pop(_AFTER_COMMIT, ()):
        try:
            callback()
        except Exception:
            log.exception("after-commit callback %r failed", callback)


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_AFTER_COMMIT)
    if pending:
        pending[:] = [entry for entry in pending if not _within(entry[0], previous_transaction)]


@event.listens_for(Session, "after_transaction_end")
def _drop_at_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)


def dialect_insert(session: AsyncSession, table):
    """An INSERT for the session's database that can say ON CONFLICT … DO NOTHING (SQLite and PostgreSQL)."""
    return (postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert)(table)
