"""Database engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import sqlite3
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from sync.errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _tune_sqlite(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the receiver write while a worker reads; busy_timeout waits out writers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@cache
def make_engine(url: str) -> Engine:
    """One engine per URL and process (pooled connections)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        args = {"timeout": 30, "check_same_thread": False}
        if path := sqlite_file(url):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=args, hide_parameters=True)
        event.listen(engine, "connect", _tune_sqlite)
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            connect_args={"connect_timeout": 5},
            hide_parameters=True,  # parameters hold payloads (and their secrets): never logged
        )
    event.listen(engine, "handle_error", _translate)
    return engine


def _translate(context: ExceptionContext) -> None:
    """Raise :class:`DatabaseUnavailable` for an outage (connection refused or lost, the
    database locked past the busy timeout, a statement cut off); other database errors
    (constraint violations…) stay SQLAlchemy's: they are bugs or handled where they occur.
    SQLAlchemy has already invalidated a lost connection when this runs."""
    if context.is_pre_ping:  # the pool replaces a connection that failed its ping itself
        return
    error = context.sqlalchemy_exception
    if context.is_disconnect or isinstance(error, (OperationalError, InterfaceError)):
        first_line = (str(context.original_exception).splitlines() or [""])[0][:200]
        raise DatabaseUnavailable(f"database unavailable: {first_line}") from error


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None: another database, or SQLite in memory)."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def copy_sqlite(source: str, target: Path) -> None:
    """A consistent copy of SQLite file ``source`` (the online backup API: it reads one
    snapshot, so writers of the source go on meanwhile)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


@cache
def session_factory(url: str) -> sessionmaker[Session]:
    """Sessions bound to the engine of ``url``."""
    return sessionmaker(make_engine(url), expire_on_commit=False)


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(url: str) -> None:
    """Apply every pending schema migration."""
    engine = make_engine(url)
    command.upgrade(_alembic_config(engine), "head")


def is_current(url: str) -> bool:
    """Whether the database schema is at the newest migration."""
    engine = make_engine(url)
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def begin_writing(session: Session) -> None:
    """Take SQLite's write lock now, for a transaction that reads before it writes.

    Without it, savepoints start a deferred transaction whose first write fails at once with
    "database is locked" when another connection committed after its first read (WAL cannot
    upgrade a stale snapshot, and the busy timeout does not apply). PostgreSQL: a no-op.
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def keep_loaded(session: Session) -> None:
    """Hold every object ``session`` loads until the session closes.

    The identity map only holds objects weakly: in a drain, the project, tasks and
    annotations one delivery loaded are collected before the next delivery asks for the same
    rows, and each ask becomes a SELECT again. Pinned, they are found in memory.
    """
    pinned = session.info.setdefault("pinned", [])
    event.listen(session, "loaded_as_persistent", lambda _s, obj: pinned.append(obj))
    event.listen(session, "pending_to_persistent", lambda _s, obj: pinned.append(obj))
