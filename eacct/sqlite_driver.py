"""SQLAlchemy's aiosqlite adapter with one trip to the connection's thread per statement.

aiosqlite runs sqlite3 on a thread of its own and every call is a round trip to it: SQLAlchemy's adapter
makes four per statement (open a cursor, execute, fetch all, close). Each trip wakes the event loop from
another thread, and under load those wake-ups, not SQLite, are what a list request costs: milliseconds each
when every core is busy (an upload hashing and compressing on worker threads). This adapter runs the four
steps as one function on the connection's thread, so a statement costs one trip. A transaction's BEGIN
travels with its first statement, and a COMMIT or ROLLBACK with no transaction open (a unit that ran no
statement, the pool's reset of a returned connection) makes no trip at all: a one-statement unit of work
costs two trips instead of four. Everything else (connections, errors, server-side cursors) is SQLAlchemy's
own aiosqlite adapter.

Used by `eacct.db.create_engine` as the DBAPI `module` of a `sqlite+aiosqlite` engine.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util.concurrency import await_

__all__ = ["OneTripConnection", "one_trip_dbapi"]

# A statement run by `OneTripConnection.run_together`: SQL in sqlite3's style and its parameters, a tuple (one
# execution) or a list of tuples (one per row).
Together = tuple[str, "tuple | list[tuple]"]


def _run_statement(connection: sqlite3.Connection, begin: tuple[str, ...] | None, operation: str, parameters: Any,
                   many: bool):
    """On the connection's thread: begin (if a BEGIN waits), execute, fetch every row, close; returns what the
    cursor must remember."""
    for statement in begin or ():
        connection.execute(statement)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_together(connection: sqlite3.Connection, begin: tuple[str, ...] | None,
                  statements: list[Together]) -> list[int]:
    """On the connection's thread: begin (if a BEGIN waits), then each statement in order; their row counts (a
    query's first value instead)."""
    for statement in begin or ():
        connection.execute(statement)
    counts = []
    for operation, parameters in statements:
        cursor = connection.cursor()
        try:
            if isinstance(parameters, list):
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, parameters)
            if cursor.description is None:
                counts.append(cursor.rowcount)
            else:
                row = cursor.fetchone()
                counts.append(None if row is None else row[0])
        finally:
            cursor.close()
    return counts


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs in one trip to the connection's thread."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor is opened here: the statement's function opens and closes its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None
        self._soft_closed_memoized = {}
        self._rows = collections.deque()
        self._description = None
        self._rowcount = -1
        self._lastrowid = None
        self._arraysize = 1

    @property
    def description(self):
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self):
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            begin = self._adapt_connection.take_begin()
            self._description, rows, self._rowcount, self._lastrowid = await self._connection._execute(
                _run_statement, self._connection._conn, begin, operation, parameters, many)
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._run(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._run(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        """Nothing to close on the thread: the statement's cursor closed when it finished."""

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        """A no-op, as in sqlite3."""


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter whose buffered cursors make one trip per statement."""

    __slots__ = ("_begin",)
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: aiosqlite.Connection) -> None:
        super().__init__(dbapi, connection)
        # The statements starting a transaction (its settings, then BEGIN) the next statement runs first, on the
        # same trip; None when none wait.
        self._begin: tuple[str, ...] | None = None

    def defer_begin(self, *statements: str) -> None:
        """Start a transaction with `statements` (the last a BEGIN) on the same trip as the next statement."""
        self._begin = statements

    def take_begin(self) -> tuple[str, ...] | None:
        """The BEGIN waiting for the next statement, if any; it is then that statement's to run."""
        begin, self._begin = self._begin, None
        return begin

    async def run_together(self, statements: list[Together]) -> list[int]:
        """Run statements in order, in one trip to the connection's thread; their row counts (a query's first value).
        sqlite3's errors come back as SQLAlchemy's, as from any other statement."""
        async with self._execute_mutex:
            begin = self.take_begin()
            try:
                return await self._connection._execute(_run_together, self._connection._conn, begin, statements)
            except sqlite3.Error as error:
                operations = "; ".join(operation for operation, _ in statements)
                raise DBAPIError.instance(operations, None, error, sqlite3.Error) from error

    def cursor(self, server_side: bool = False):
        if server_side and self._begin is not None:
            # A server-side cursor runs its statement through aiosqlite itself: the BEGIN goes first, on its own.
            self._exec_begin()
        return super().cursor(server_side)

    def _exec_begin(self) -> None:
        """Run a waiting BEGIN now, on a trip of its own."""
        for statement in self.take_begin() or ():
            try:
                await_(self._connection._execute(self._connection._conn.execute, statement))
            except Exception as error:
                self._handle_exception(error)

    def _in_transaction(self) -> bool:
        # Read on the loop's thread while the connection's thread is idle: the adapter runs one call at a time.
        connection = self._connection._connection
        return connection is not None and connection.in_transaction

    def commit(self) -> None:
        self._begin = None  # no statement ran since BEGIN was asked for: there is nothing to commit
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        self._begin = None
        if self._in_transaction():
            super().rollback()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect talks to, connecting with `OneTripConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter does: a forgotten connection must not hang exit
        return OneTripConnection(self, await_(connection))


def one_trip_dbapi() -> OneTripDbapi:
    """The module to pass as `module=` to `create_async_engine` for a `sqlite+aiosqlite` URL."""
    return OneTripDbapi(aiosqlite, sqlite3)
