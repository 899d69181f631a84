"""The durable inbox: every accepted delivery is a row until it is applied.

Redis only carries wake-ups; what must still happen is always read from here, so a lost
queue (Redis restarted empty, a worker killed mid-job) loses nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync.models import Delivery
from sync.payloads import storable

# One INSERT … RETURNING for a batch; ``sort_by_parameter_order``: the ids come back in the
# rows' order.
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


def record(engine: Engine, **fields: Any) -> Recorded:
    """Insert a delivery and commit; an already-recorded key answers ``duplicate``."""
    return record_many(engine, [delivery_row(**fields)])[0]


def record_many(engine: Engine, rows: list[dict[str, Any]]) -> list[Recorded]:
    """Insert deliveries in one transaction (one statement) and commit; if a key was
    recorded before, the rows are recorded one by one so each duplicate is answered as such.
    Database errors propagate (the receiver answers 503)."""
    try:
        with engine.begin() as conn:
            ids = conn.execute(_INSERT, rows).scalars().all()
    except IntegrityError:
        if len(rows) > 1:
            return [record_many(engine, [row])[0] for row in rows]
        with engine.connect() as conn:
            existing = conn.execute(
                select(Delivery.id, Delivery.project_id).where(Delivery.key == rows[0]["key"])
            ).first()
        if existing is None:
            raise
        return [Recorded(existing.id, "duplicate", existing.project_id)]
    return [Recorded(i, row["status"], row["project_id"]) for i, row in zip(ids, rows, strict=True)]


def pending_batch(session: Session, project_id: int | None, limit: int, skip: set[int]) -> list:
    """The oldest pending deliveries of one project (None: deliveries without a project), as
    rows of ``id, action, project_id, body, received_at`` (not ORM objects: the drain's hot
    path)."""
    columns = (
        Delivery.id,
        Delivery.action,
        Delivery.project_id,
        Delivery.body,
        Delivery.received_at,
    )
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


PRUNE_BATCH = 10_000


def prune(session: Session, older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete up to ``batch`` applied or ignored deliveries received before ``older_than``;
    how many. Failed and rejected ones stay (they wait for a replay), and so do pending ones.
    A redelivery of a pruned one is recorded again: applying it changes nothing, since every
    delivery is order-safe (the newest ``updated_at`` wins, deletes leave tombstones)."""
    doomed = (
        select(Delivery.id)
        .where(Delivery.status.in_((APPLIED, IGNORED)), Delivery.received_at < older_than)
        .order_by(Delivery.id)
        .limit(batch)
    )
    ids = list(session.scalars(doomed))
    if ids:
        session.execute(delete(Delivery).where(Delivery.id.in_(ids)))
    return len(ids)
