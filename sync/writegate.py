"""One SQLite writer at a time across processes, waiting in fine steps instead of SQLite's.

SQLite lets one connection write at a time. A connection that finds the database locked
sleeps in SQLite's busy handler 1, 2, 5, 10, 15, 20, 25 … 100 ms between tries, so a
receiver that arrives just after a worker took the lock sleeps far past its release.
Measured in the 10,000-delivery burst: receivers waited ~2.5 ms per commit and the
machine sat ~20 % idle.

Every write transaction of annosync's SQLite connections first takes this gate: a
``threading.Lock`` for the threads of one process, then an exclusive ``flock`` on
``<database>-gate`` for the processes. A process that is killed loses its ``flock`` with
it. A waiter retries every 50 µs doubling to 1 ms, and gives up after ``TIMEOUT_S`` with
the error SQLite itself would raise ("database is locked"), so a writer stuck inside a
transaction costs the others an error, never a hang.

The gate is taken before a statement that writes (or ``BEGIN IMMEDIATE``) and given back
when the connection's transaction ends (commit, rollback, close). Writers that do not use
these connections (another program, ``sqlite3`` on the command line) still meet SQLite's
own lock and busy handler, as before.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

TIMEOUT_S = 30.0
FIRST_PAUSE_S = 0.00005
LONGEST_PAUSE_S = 0.001
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_EXCLUSIVE_BEGINS = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")


class WriteGate:
    """The gate of one database file (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid = -1
        self._lock = threading.Lock()
        self._fd = -1

    def acquire(self) -> None:
        """Wait for the gate; raises ``sqlite3.OperationalError`` after ``TIMEOUT_S``."""
        self._adopt()
        deadline = time.monotonic() + TIMEOUT_S
        if not self._lock.acquire(timeout=TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked (write gate)")
        try:
            self._lock_file(deadline)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        """Give the gate back (the caller holds it)."""
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def _lock_file(self, deadline: float) -> None:
        pause = FIRST_PAUSE_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked (write gate)") from None
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_S)

    def _adopt(self) -> None:
        """Open the gate file in this process (a forked child needs its own descriptor:
        a ``flock`` belongs to the open file, which a fork shares)."""
        if self._pid == os.getpid():
            return
        self._lock = threading.Lock()  # a fork may have copied it held
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()


def is_write(sql: str) -> bool:
    """Whether a statement writes (or starts a transaction that will)."""
    head = sql.lstrip()[:15].upper()
    return head.startswith(_WRITES) or head.startswith(_EXCLUSIVE_BEGINS)


def connection_class(gate: WriteGate) -> type[sqlite3.Connection]:
    """A ``sqlite3.Connection`` class (for ``sqlite3.connect(factory=...)``) whose write
    transactions pass ``gate``."""

    class GatedCursor(sqlite3.Cursor):
        def execute(self, sql, parameters=(), /):
            self.connection.enter(sql)
            try:
                return super().execute(sql, parameters)
            except BaseException:
                self.connection.give_back()  # failed outside a transaction: nothing to end
                raise

        def executemany(self, sql, seq_of_parameters, /):
            self.connection.enter(sql)
            try:
                return super().executemany(sql, seq_of_parameters)
            except BaseException:
                self.connection.give_back()
                raise

    class GatedConnection(sqlite3.Connection):
        _holds = False

        def enter(self, sql: str) -> None:
            """Take the gate before ``sql`` if it writes."""
            if not self._holds and is_write(sql):
                gate.acquire()
                self._holds = True

        def cursor(self, factory=GatedCursor):
            return super().cursor(factory)

        # sqlite3's own Connection.execute* make a plain cursor, past cursor() above.
        def execute(self, sql, parameters=(), /):
            return self.cursor().execute(sql, parameters)

        def executemany(self, sql, seq_of_parameters, /):
            return self.cursor().executemany(sql, seq_of_parameters)

        def commit(self):
            try:
                super().commit()
            finally:
                self.give_back()

        def rollback(self):
            try:
                super().rollback()
            finally:
                self.give_back()

        def close(self):
            try:
                super().close()
            finally:
                if self._holds:
                    self._give_back_now()

        def give_back(self) -> None:
            """Release the gate once no transaction is open."""
            if self._holds and not self.in_transaction:
                self._give_back_now()

        def _give_back_now(self) -> None:
            self._holds = False
            gate.release()

    return GatedConnection


_gates: dict[str, WriteGate] = {}
_gates_lock = threading.Lock()


def gate_for(database_path: str) -> WriteGate:
    """The process's gate of a database file (``<path>-gate`` beside it)."""
    key = os.path.abspath(database_path)
    with _gates_lock:
        if key not in _gates:
            _gates[key] = WriteGate(key + "-gate")
        return _gates[key]
