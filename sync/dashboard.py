"""What the status page shows: every project at a glance, and one project in detail.

Built from grouped queries (:mod:`sync.status`), so the overview costs the same handful of
queries for one project or a thousand; the detail of a project reads only its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from sync import exports, status, store, triggers
from sync.exporters import get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.models import Delivery

RECENT = 20  # deliveries listed as "recent"
PROBLEMS = 100  # failed deliveries and unexported tasks listed per project


@dataclass(frozen=True)
class Format:
    name: str
    unfit: str | None  # why the project's label config cannot be exported to it


def overview(session: Session) -> dict[str, Any]:
    """Every project with its counts and lags, and the newest deliveries of all."""
    return {
        "projects": status.project_status(session)["projects"],
        "recent": [_delivery(row) for row in _deliveries(session, None, None, RECENT)],
    }


def project(session: Session, project_id: int, formats: tuple[str, ...]) -> dict[str, Any]:
    """One project: its report, what failed and why, recent deliveries, trigger sends, and
    the kept-fresh formats (``formats``) with whether its label config fits each.

    Raises :class:`~sync.errors.UnknownProject` for a project annosync never heard of."""
    store.require_project(session, project_id)
    config = exports.project_config(session, project_id)
    failed = _deliveries(session, project_id, ("failed", "rejected"), PROBLEMS)
    return {
        "report": status.project_status(session, project_id)["projects"][0],
        "failed": [_delivery(row) for row in failed],
        "unexported": [
            {"task": task_id, "reason": reason}
            for task_id, _project, reason in store.failed_tasks(session, project_id, PROBLEMS)
        ],
        "recent": [_delivery(row) for row in _deliveries(session, project_id, None, RECENT)],
        "triggers": triggers.deliveries(session, project_id, RECENT),
        "formats": [Format(name, unfit_reason(get_exporter(name), config)) for name in formats],
    }


def _deliveries(
    session: Session, project_id: int | None, statuses: tuple[str, ...] | None, limit: int
) -> list[Row]:
    """The newest deliveries as listed: never their bodies (up to ANNOSYNC_MAX_BODY_BYTES
    each, and they may hold the project's API token), so those are not even read."""
    query = select(*LISTED).order_by(Delivery.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(Delivery.project_id == project_id)
    if statuses:
        query = query.where(Delivery.status.in_(statuses))
    return list(session.execute(query))


LISTED = (
    Delivery.id,
    Delivery.action,
    Delivery.project_id,
    Delivery.status,
    Delivery.attempts,
    Delivery.received_at,
    Delivery.last_error,
    Delivery.errors,
)


def _delivery(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "action": row.action,
        "project": row.project_id,
        "status": row.status,
        "attempts": row.attempts,
        "received_at": status.iso(row.received_at),
        "reason": row.last_error or row.errors,
    }
