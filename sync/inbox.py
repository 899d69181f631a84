"""The durable inbox: every accepted delivery is a row until it is applied.

Redis only carries wake-ups; what must still happen is always read from here, so a lost
queue (Redis restarted empty, a worker killed mid-job) loses nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any

import orjson
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from sync.models import Delivery
from sync.payloads import storable

# On the table, not the mapped class: an ORM-enabled insert costs as much again in bulk-insert
# bookkeeping, on the receiver's hot path.
_INSERT = insert(Delivery.__table__).returning(
    Delivery.__table__.c.id, sort_by_parameter_order=True
)
PENDING, APPLIED, FAILED, IGNORED, REJECTED = "pending", "applied", "failed", "ignored", "rejected"


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a delivery."""

    delivery_id: int
    status: str  # the delivery's status, or "duplicate"
    project_id: int | None


def delivery_key(raw_body: bytes, webhook_id: str | None, url_project: int | None) -> str:
    """Idempotency key: the Standard Webhooks id when sent, else a digest of the body."""
    if webhook_id:
        return "wh:" + hashlib.sha256(webhook_id.encode()).hexdigest()
    digest = hashlib.sha256(raw_body)
    digest.update(f"|{url_project or ''}".encode())
    return "sha:" + digest.hexdigest()


def delivery_row(
    *,
    action: str,
    project_id: int | None,
    body: bytes,
    key: str | None,
    status: str,
    errors: list[dict] | None = None,
) -> dict[str, Any]:
    """The inbox row of a delivery about to be recorded."""
    return {
        "key": key,
        "source": "label-studio",
        "action": action[:64],
        "project_id": project_id,
        "status": status,
        "body": body,
        "errors": orjson.dumps(errors).decode() if errors else None,
        "received_at": datetime.now(UTC),
        "attempts": 0,
    }


def record(session: Session, **fields: Any) -> Recorded:
    """Insert a delivery and commit; an already-recorded key answers ``duplicate``."""
    return record_many(session, [delivery_row(**fields)])[0]


def record_many(session: Session, rows: list[dict[str, Any]]) -> list[Recorded]:
    """Insert deliveries in one transaction (one statement) and commit; if a key was
    recorded before, the rows are recorded one by one so each duplicate is answered as such."""
    try:
        # A Core INSERT … RETURNING: the receiver's hot path, without ORM unit-of-work costs.
        ids = session.execute(_INSERT, rows).scalars().all()
        session.commit()
    except IntegrityError:
        session.rollback()
        if len(rows) > 1:
            return [record_many(session, [row])[0] for row in rows]
        existing = session.execute(
            select(Delivery.id, Delivery.project_id).where(Delivery.key == rows[0]["key"])
        ).first()
        session.rollback()
        if existing is None:
            raise
        return [Recorded(existing.id, "duplicate", existing.project_id)]
    return [Recorded(i, row["status"], row["project_id"]) for i, row in zip(ids, rows, strict=True)]


def insert_many(engine: Engine, rows: list[dict[str, Any]], conn=None) -> list[Recorded]:
    """:func:`record_many` on a bare driver connection: the receiver's hot path (SQLAlchemy's
    session, statement compilation and result handling cost more than the insert itself).
    ``conn``: a pooled connection the caller holds across calls (a checkout costs a ping and
    a rollback: two round trips on PostgreSQL); after an error the caller must drop it.
    Rows with a key recorded before are handed to :func:`record_many`, which names them."""
    sql, processors = _raw_insert(engine)
    params = [[p(row.get(c)) if p else row.get(c) for c, p in processors] for row in rows]
    driver = engine.dialect.dbapi
    try:
        if conn is not None:
            ids = _insert_committed(engine, conn, sql, params)
        else:
            with writer_connection(engine) as own:
                ids = _insert_committed(engine, own, sql, params)
    except driver.Error as exc:  # as SQLAlchemy would raise it (callers answer 503)
        raise DBAPIError.instance(sql, None, exc, driver.Error, hide_parameters=True) from exc
    if ids is None:
        with Session(engine) as session:
            return record_many(session, rows)
    return [Recorded(i, row["status"], row["project_id"]) for i, row in zip(ids, rows, strict=True)]


def writer_connection(engine: Engine):
    """A pooled driver connection to hold for :func:`insert_many` (errors as SQLAlchemy's)."""
    driver = engine.dialect.dbapi
    try:
        return engine.raw_connection()
    except driver.Error as exc:
        raise DBAPIError.instance(None, None, exc, driver.Error, hide_parameters=True) from exc


def _insert_committed(engine: Engine, conn, sql: str, params: list[list[Any]]) -> list[int] | None:
    """Insert and commit; the new ids, or None when a key was recorded before."""
    if engine.dialect.name == "postgresql":
        return _insert_autocommitted(engine, conn, sql, params)
    cursor = conn.cursor()
    try:
        ids = _insert_returning_ids(engine, cursor, sql, params)
        conn.commit()
        return ids
    except engine.dialect.dbapi.IntegrityError:
        conn.rollback()
        return None
    finally:
        cursor.close()


def _insert_autocommitted(
    engine: Engine, conn, sql: str, params: list[list[Any]]
) -> list[int] | None:
    """PostgreSQL: the batch is one INSERT statement, so it is run as its own transaction
    (autocommit): one round trip, where BEGIN, INSERT and COMMIT took three, each a wait for
    the GIL again among the request threads. A failing INSERT inserts nothing."""
    driver = conn.driver_connection
    driver.autocommit = True
    cursor = conn.cursor()
    try:
        return _insert_returning_ids(engine, cursor, sql, params)
    except engine.dialect.dbapi.IntegrityError:
        return None
    finally:
        cursor.close()
        if not driver.closed:  # a lost connection is dropped by the caller, not reused
            driver.autocommit = False  # the pool's other users expect transactions


@cache
def _raw_insert(engine: Engine) -> tuple[str, list[tuple[str, Any]]]:
    """The driver-level INSERT of an inbox row and each column's bind conversion."""
    table, dialect = Delivery.__table__, engine.dialect
    columns = [c for c in table.columns if c.name != "id"]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    if dialect.name != "sqlite":
        sql += " RETURNING id"
    return sql, [(c.name, c.type.bind_processor(dialect)) for c in columns]


def _insert_returning_ids(engine: Engine, cursor, sql: str, params: list[list[Any]]) -> list[int]:
    if engine.dialect.name == "sqlite":  # one statement per row: lastrowid is the id
        ids = []
        for values in params:
            cursor.execute(sql, values)
            ids.append(cursor.lastrowid)
        return ids
    if len(params) == 1:  # the common case at light load
        return [cursor.execute(sql, params[0]).fetchone()[0]]
    flat = [value for n, values in enumerate(params) for value in (n, *values)]
    cursor.execute(_insert_many_sql(engine, len(params)), flat)
    return sorted(row[0] for row in cursor.fetchall())


@lru_cache(maxsize=256)
def _insert_many_sql(engine: Engine, rows: int) -> str:
    """One INSERT of ``rows`` rows (PostgreSQL) whose ids, sorted, are in the rows' order:
    the rows are inserted ordered by their position, so the id sequence numbers them in that
    order (what SQLAlchemy's own "insertmanyvalues" relies on). Measured in the receiver, a
    pipelined ``executemany`` spent a quarter of its GIL-holding time in psycopg's pipeline."""
    table, dialect = Delivery.__table__, engine.dialect
    columns = [c for c in table.columns if c.name != "id"]
    names = ", ".join(c.name for c in columns)
    casts = ", ".join(f"CAST(%s AS {c.type.compile(dialect=dialect)})" for c in columns)
    values = ", ".join(f"(CAST(%s AS INTEGER), {casts})" for _ in range(rows))
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} "
        f"FROM (VALUES {values}) AS v(ord, {names}) ORDER BY ord RETURNING id"
    )


def pending_batch(session: Session, project_id: int | None, limit: int, skip: set[int]) -> list:
    """The oldest pending deliveries of one project (None: deliveries without a project), as
    rows of ``id, action, project_id, body`` (not ORM objects: the drain's hot path)."""
    columns = (Delivery.id, Delivery.action, Delivery.project_id, Delivery.body)
    query = select(*columns).where(Delivery.status == PENDING)
    query = query.where(
        Delivery.project_id.is_(None) if project_id is None else Delivery.project_id == project_id
    )
    if skip:
        query = query.where(Delivery.id.not_in(skip))
    return list(session.execute(query.order_by(Delivery.id).limit(limit)))


def projects_with_pending(session: Session, older_than_s: float = 0.0) -> list[int | None]:
    """Projects that have pending deliveries received at least ``older_than_s`` ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    rows = session.execute(
        select(Delivery.project_id)
        .where(Delivery.status == PENDING, Delivery.received_at <= cutoff)
        .group_by(Delivery.project_id)
    )
    return [r[0] for r in rows]


def mark_applied(session: Session, delivery_ids: list[int]) -> None:
    """These deliveries' effects are in the task store (one statement)."""
    if not delivery_ids:
        return
    table = Delivery.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(delivery_ids))
        .values(
            status=APPLIED,
            applied_at=datetime.now(UTC),
            attempts=table.c.attempts + 1,
            last_error=None,
        )
    )


def mark_attempt_failed(session: Session, delivery_id: int, error: str, max_attempts: int) -> str:
    """Count a failed attempt; the delivery fails for good after ``max_attempts``."""
    row = session.get(Delivery, delivery_id)
    row.attempts += 1
    row.last_error = storable(error)
    row.status = FAILED if row.attempts >= max_attempts else PENDING
    return row.status


def last_id(session: Session) -> int:
    """The id of the newest delivery received (0: none yet)."""
    return session.scalar(select(func.max(Delivery.id))) or 0


def list_deliveries(session: Session, status: str | None = None, limit: int = 100) -> list:
    """The newest deliveries, optionally of one status."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if status:
        query = query.where(Delivery.status == status)
    return list(session.scalars(query))


def requeue(session: Session, delivery_ids: list[int]) -> int:
    """Put failed (or applied) deliveries back to pending, for a replay."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.status.in_([FAILED, APPLIED]))
        .values(status=PENDING, attempts=0, last_error=None)
    )
    return result.rowcount
