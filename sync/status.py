"""Per-project state: tasks, annotations, deliveries, lag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync.models import Annotation, Delivery, Project, Task


def _counts(session: Session, column, *where) -> dict[Any, int]:
    query = select(column, func.count()).where(*where).group_by(column)
    return {key: n for key, n in session.execute(query)}


def project_status(session: Session, project_id: int | None = None) -> dict[str, Any]:
    """A report per project (all projects, or one)."""
    only = [] if project_id is None else [project_id]
    tasks = _counts(
        session,
        Task.project_id,
        Task.deleted.is_(False),
        *([Task.project_id.in_(only)] if only else []),
    )
    dirty = _counts(session, Task.project_id, Task.dirty.is_(True))
    unexported = _counts(session, Task.project_id, Task.error.is_not(None), Task.deleted.is_(False))
    annotations = _counts(session, Annotation.project_id, Annotation.deleted.is_(False))
    deliveries: dict[int | None, dict[str, int]] = {}
    for pid, status, n in session.execute(
        select(Delivery.project_id, Delivery.status, func.count()).group_by(
            Delivery.project_id, Delivery.status
        )
    ):
        deliveries.setdefault(pid, {})[status] = n
    last = dict(
        session.execute(
            select(Delivery.project_id, func.max(Delivery.received_at)).group_by(
                Delivery.project_id
            )
        ).all()
    )
    oldest_pending = dict(
        session.execute(
            select(Delivery.project_id, func.min(Delivery.received_at))
            .where(Delivery.status == "pending")
            .group_by(Delivery.project_id)
        ).all()
    )
    rows = session.execute(
        select(
            Project.id,
            Project.title,
            Project.config_error,
            Project.export_generation,
            Project.changes_since,
        ).where(*([Project.id.in_(only)] if only else []))
    ).all()
    projects_seen = {row.id: row for row in rows}
    ids = only or sorted({*tasks, *deliveries, *projects_seen} - {None})
    now = datetime.now(UTC)
    projects = []
    for pid in ids:
        pending_since = _aware(oldest_pending.get(pid))
        seen = projects_seen.get(pid)
        changes_since = _aware(seen.changes_since) if seen else None
        projects.append(
            {
                "project": pid,
                "title": seen.title if seen else None,
                "tasks": tasks.get(pid, 0),
                "annotations": annotations.get(pid, 0),
                "deliveries": deliveries.get(pid, {}),
                "pending": deliveries.get(pid, {}).get("pending", 0),
                "failed": deliveries.get(pid, {}).get("failed", 0),
                "files_owed": dirty.get(pid, 0),
                "tasks_not_exported": unexported.get(pid, 0),
                "config_error": seen.config_error if seen else None,
                "generation": (seen.export_generation or 0) if seen else 0,
                "last_event": iso(last.get(pid)),
                "lag_s": _seconds(now, pending_since),
                "export_lag_s": _seconds(now, changes_since),
            }
        )
    return {"projects": projects}


def _seconds(now: datetime, since: datetime | None) -> float:
    return round(max(0.0, (now - since).total_seconds()), 3) if since else 0.0


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def iso(moment: datetime | None) -> str | None:
    moment = _aware(moment)
    return moment.isoformat(timespec="seconds") if moment else None


def as_text(report: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    lines = [
        f"{'project':>8}  {'tasks':>7}  {'annotations':>11}  {'pending':>7}  "
        f"{'failed':>6}  {'files owed':>10}  {'not exported':>12}  {'lag s':>6}  last event"
    ]
    problems = []
    for p in report["projects"]:
        lines.append(
            f"{p['project']:>8}  {p['tasks']:>7}  {p['annotations']:>11}  "
            f"{p['pending']:>7}  {p['failed']:>6}  {p['files_owed']:>10}  "
            f"{p['tasks_not_exported']:>12}  {p['lag_s']:>6}  {p['last_event'] or '-'}"
        )
        if p["config_error"]:
            problems.append(f"project {p['project']}: {p['config_error']}")
        if p["tasks_not_exported"]:
            problems.append(
                f"project {p['project']}: {p['tasks_not_exported']} tasks not exported "
                "(annosync deliveries list --failed names them)"
            )
    return "\n".join(lines + problems)
