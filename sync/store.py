"""The task store: tasks and annotations as last seen, with tombstones.

Rules that make applying idempotent and order-independent:
- an annotation version replaces the stored one only if its ``updated_at`` is newer;
- a deleted task or annotation is kept as a tombstone; a late create/update of the same
  object (same or older ``created_at``) does not bring it back, while a genuinely new object
  that reuses the id (newer ``created_at``; Label Studio's SQLite backend reuses ids) does;
- ``created_at`` tells incarnations of a task id apart: a payload of an older one (an
  annotation of the deleted task, delivered late) changes nothing, a newer one replaces the
  task and retires the old incarnation's annotations;
- a delete applies only to incarnations born from earlier deliveries (``born`` < its
  delivery id), so a replayed or late delete never removes a later re-create.
Every change bumps the task's ``version`` and sets ``dirty``: storage owes the task a write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from sync.errors import UnknownProject
from sync.models import Annotation, Delivery, Project, Task
from sync.payloads import normalise_ts, now_ts


def preload(
    session: Session, bodies: list[dict[str, Any]], chunk: int = 500, tasks_too: bool = False
) -> list:
    """Load the tasks and annotations a batch of deliveries names, in a few SELECTs, so that
    applying them finds the rows in the session instead of one query each. Returns the rows:
    the session holds them weakly, so a caller that does not pin what sessions load (see
    :func:`sync.db.keep_loaded`) keeps this list while it applies. ``tasks_too``: absent
    tasks are known absent as well (only for callers that create tasks through
    :func:`upsert_task` alone: a pull, not deliveries, whose task imports are bulk-inserted)."""
    task_ids, annotation_ids = set(), set()
    for body in bodies:
        for key, ids in (("task", task_ids), ("tasks", task_ids), ("annotation", annotation_ids)):
            items = body.get(key)
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, dict) and type(item.get("id")) is int:
                    ids.add(item["id"])
    # Annotations are only ever created through _get's callers, so an id absent now stays
    # absent until one of them adds it; tasks are also bulk-inserted, so only found ones count.
    absent = session.info["absent"] = set()  # annotation ids; this batch's only
    absent_tasks = session.info["absent_tasks"] = set()
    loaded: list = []
    for model, ids in ((Task, sorted(task_ids)), (Annotation, sorted(annotation_ids))):
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            rows = list(session.scalars(select(model).where(model.id.in_(part))))
            loaded += rows
            missing = set(part) - {row.id for row in rows}
            if model is Annotation:
                absent.update(missing)
            elif tasks_too:
                absent_tasks.update(missing)
    return loaded


def forget_preload(session: Session) -> None:
    """Stop trusting the last :func:`preload` (after a rollback, or once the batch is done)."""
    session.info.pop("absent", None)
    session.info.pop("absent_tasks", None)


def _get_task(session: Session, task_id: int) -> Task | None:
    """``session.get``, without a SELECT for ids a ``tasks_too`` :func:`preload` found absent."""
    absent = session.info.get("absent_tasks")
    if absent and task_id in absent:
        absent.discard(task_id)
        return None
    return session.get(Task, task_id)


def _get_annotation(session: Session, ann_id: int) -> Annotation | None:
    """``session.get``, answering None without a SELECT for ids :func:`preload` found absent
    (the caller then adds the row, so the id is no longer absent)."""
    absent = session.info.get("absent")
    if absent is not None and ann_id in absent:
        absent.discard(ann_id)
        return None
    return session.get(Annotation, ann_id)


def _is_newer(incoming: str | None, stored: str | None) -> bool:
    if stored is None:
        return True
    return incoming is not None and incoming > stored


def _wins(ts: str | None, body: bytes, stored_ts: str | None, stored_body: bytes) -> bool:
    """Newest timestamp wins; a tie goes to the larger body, so every order converges."""
    if ts != stored_ts:
        return _is_newer(ts, stored_ts)
    return body > stored_body


def _tombstone_holds(
    created_at: str | None,
    tomb_created: str | None,
    tomb_deleted: str | None,
    pulled_at: str | None = None,
) -> bool:
    """Whether a tombstone still covers an object created at ``created_at``. A snapshot
    pulled from Label Studio after the delete (``pulled_at``) shows the object exists now:
    Label Studio reused the id in a way delete payloads (ids only) could not tell."""
    if pulled_at is not None and tomb_deleted is not None and tomb_deleted < pulled_at:
        return False
    if created_at is None:
        return True
    reference = tomb_created or tomb_deleted
    return reference is None or created_at <= reference


def touch(task: Task) -> None:
    """Record a change of the task: storage owes it a write."""
    task.version += 1
    task.dirty = True


def upsert_task(
    session: Session,
    data: dict[str, Any],
    project_id: int | None,
    seq: int | None = None,
    pulled_at: str | None = None,
) -> Task | None:
    """Store a task's own fields (``seq``: the delivery's id; ``pulled_at``: for a task of a
    snapshot, when the pull began); returns the live task, or None when the payload is of a
    deleted incarnation (a tombstone holds, or the stored task is a newer incarnation)."""
    task_id = data["id"]
    created = normalise_ts(data.get("created_at"))
    updated = normalise_ts(data.get("updated_at"))
    project_id = data["project"] if isinstance(data.get("project"), int) else project_id
    body = orjson.dumps({k: v for k, v in data.items() if k not in ("annotations", "completions")})
    task = _get_task(session, task_id)
    if task is None:
        task = Task(
            id=task_id,
            project_id=project_id,
            body=body,
            created_at=created,
            updated_at=updated,
            deleted=False,
            version=1,
            dirty=True,
            born=seq,
        )
        session.add(task)
    elif task.deleted:
        if _tombstone_holds(created, task.created_at, task.deleted_at, pulled_at):
            return None
        _revive_task(task, body, project_id, created, updated, seq)
    elif _older(created, task.created_at):
        return None
    elif _older(task.created_at, created):  # the old incarnation was deleted meanwhile
        _retire_annotations(session, task.id)
        _revive_task(task, body, project_id, created, updated, seq)
    elif _wins(updated, body, task.updated_at, task.body):
        if _keeps_predictions(task, data):
            body = orjson.dumps({**orjson.loads(body), "predictions": _stored(task, "predictions")})
        if body != task.body or project_id != task.project_id:
            task.body, task.project_id = body, project_id
            touch(task)
        task.updated_at = updated or task.updated_at
        task.created_at = task.created_at or created
    for annotation in data.get("annotations") or data.get("completions") or []:
        upsert_annotation(session, annotation, task, seq, pulled_at)
    return task


def _stored(task: Task, key: str) -> Any:
    return orjson.loads(task.body).get(key, [])


def _keeps_predictions(task: Task, incoming: dict[str, Any]) -> bool:
    # Webhook tasks carry no predictions: do not let them erase ones a pull brought in.
    return "predictions" not in incoming and bool(_stored(task, "predictions"))


def _older(created: str | None, than: str | None) -> bool:
    """Whether ``created`` is of an earlier incarnation than ``than``: a whole second earlier
    (normalised stamps compare as strings; a source writing fewer digits of the fraction
    must not look like another incarnation)."""
    return created is not None and than is not None and created[:19] < than[:19]


def _revive_task(task, body, project_id, created, updated, seq) -> None:
    """A new task reusing a deleted task's id (its old annotations stay tombstoned)."""
    task.body, task.project_id, task.created_at, task.updated_at = (
        body,
        project_id,
        created,
        updated,
    )
    task.deleted, task.deleted_at, task.born = False, None, seq
    touch(task)


def _retire_annotations(session: Session, task_id: int) -> None:
    """Tombstone a task's annotations (Label Studio deletes them with the task, silently)."""
    session.execute(
        update(Annotation)
        .where(Annotation.task_id == task_id, Annotation.deleted.is_(False))
        .values(deleted=True, deleted_at=now_ts())
    )


def upsert_annotation(
    session: Session,
    data: dict[str, Any],
    task: Task,
    seq: int | None = None,
    pulled_at: str | None = None,
) -> bool:
    """Store an annotation version if it is newer; True when the stored state changed."""
    ann_id = data["id"]
    created = normalise_ts(data.get("created_at"))
    updated = normalise_ts(data.get("updated_at"))
    body = orjson.dumps({**data, "task": task.id})
    row = _get_annotation(session, ann_id)
    if row is None:
        session.add(
            Annotation(
                id=ann_id,
                task_id=task.id,
                project_id=task.project_id,
                body=body,
                created_at=created,
                updated_at=updated,
                deleted=False,
                born=seq,
            )
        )
    elif row.deleted:
        if _tombstone_holds(created, row.created_at, row.deleted_at, pulled_at):
            return False
        old_task = row.task_id
        row.task_id, row.project_id, row.body = task.id, task.project_id, body
        row.created_at, row.updated_at, row.deleted, row.deleted_at = created, updated, False, None
        row.born = seq
        _touch_task_id(session, old_task)
    elif row.task_id != task.id and _is_newer(created, row.created_at):
        # A reused id now names an annotation of another task.
        old_task = row.task_id
        row.task_id, row.project_id, row.body = task.id, task.project_id, body
        row.created_at, row.updated_at, row.born = created, updated, seq
        _touch_task_id(session, old_task)
    elif row.task_id == task.id and _wins(updated, body, row.updated_at, row.body):
        row.body, row.updated_at = body, updated
        row.created_at = row.created_at or created
    else:
        return False
    touch(task)
    return True


def _touch_task_id(session: Session, task_id: int) -> None:
    task = session.get(Task, task_id)
    if task is not None and not task.deleted:
        touch(task)


def _born_later(row: Task | Annotation, seq: int | None) -> bool:
    """Whether ``row`` is an incarnation created by a delivery after ``seq``."""
    return seq is not None and row.born is not None and row.born > seq


def delete_annotations(session: Session, ids: Iterable[int], seq: int | None = None) -> set[int]:
    """Tombstone annotations by id (``seq``: the deleting delivery's id); returns the ids of
    the tasks that changed."""
    changed: set[int] = set()
    stamp = now_ts()
    for ann_id in ids:
        row = _get_annotation(session, ann_id)
        if row is None:
            session.add(
                Annotation(
                    id=ann_id, task_id=0, body=b"{}", deleted=True, deleted_at=stamp, born=seq
                )
            )
        elif not row.deleted and not _born_later(row, seq):
            row.deleted, row.deleted_at = True, stamp
            _touch_task_id(session, row.task_id)
            changed.add(row.task_id)
    return changed


def delete_tasks(
    session: Session, ids: Iterable[int], project_id: int | None, seq: int | None = None
) -> set[int]:
    """Tombstone tasks (and their annotations, which Label Studio deletes silently);
    ``seq``: the deleting delivery's id."""
    changed: set[int] = set()
    stamp = now_ts()
    for task_id in ids:
        task = session.get(Task, task_id)
        if task is None:
            session.add(
                Task(
                    id=task_id,
                    project_id=project_id,
                    body=b"{}",
                    deleted=True,
                    deleted_at=stamp,
                    version=1,
                    dirty=True,
                    born=seq,
                )
            )
            continue
        if task.deleted or _born_later(task, seq):
            continue
        task.deleted, task.deleted_at = True, stamp
        touch(task)
        _retire_annotations(session, task_id)
        changed.add(task_id)
    return changed


def retry_failed(session: Session, project_id: int) -> int:
    """Owe another write to every live task of the project that could not be exported (the
    limits, or the exporter, may have changed since); returns how many."""
    table = Task.__table__
    result = session.execute(
        update(table)
        .where(
            table.c.project_id == project_id,
            table.c.deleted.is_(False),
            table.c.error.is_not(None),
        )
        .values(dirty=True, version=table.c.version + 1)
    )
    return result.rowcount


def failed_tasks(session: Session, project_id: int | None, limit: int = 100) -> list:
    """``(task id, project id, reason)`` of live tasks missing from the exports."""
    query = select(Task.id, Task.project_id, Task.error).where(
        Task.error.is_not(None), Task.deleted.is_(False)
    )
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    return list(session.execute(query.order_by(Task.id).limit(limit)))


def project_task_ids(session: Session, project_id: int) -> list[int]:
    """Ids of a project's live tasks."""
    query = select(Task.id).where(Task.project_id == project_id, Task.deleted.is_(False))
    return list(session.scalars(query))


def require_project(session: Session, project_id: int) -> None:
    """Raise :class:`UnknownProject` unless annosync has received something of the project:
    its project object, a task, or a delivery (still pending, perhaps)."""
    if session.get(Project, project_id) is not None:
        return
    for column in (Task.project_id, Delivery.project_id):
        if session.scalar(select(column).where(column == project_id).limit(1)) is not None:
            return
    raise UnknownProject(project_id)


def known_projects(session: Session) -> list[int]:
    """Projects that have live tasks."""
    query = select(Task.project_id).where(Task.deleted.is_(False), Task.project_id.is_not(None))
    return list(session.scalars(query.group_by(Task.project_id)))


def dirty_tasks(session: Session, project_id: int | None, limit: int) -> list[Task]:
    """Tasks of one project (None: of no project) whose storage object is out of date."""
    owner = Task.project_id.is_(None) if project_id is None else Task.project_id == project_id
    query = select(Task).where(Task.dirty.is_(True), owner).order_by(Task.id).limit(limit)
    return list(session.scalars(query))


def dirty_projects(session: Session) -> set[int | None]:
    """Projects that have tasks whose storage object is out of date."""
    query = select(Task.project_id).where(Task.dirty.is_(True)).group_by(Task.project_id)
    return set(session.scalars(query))


def mark_written(session: Session, written: list[tuple[int, int, str | None]]) -> None:
    """Storage now holds these ``(task id, version, sha256 of the bytes)`` (sha256 None: the
    file was removed); a task stays dirty if it changed again meanwhile."""
    if not written:
        return
    table = Task.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("tid"))
        .values(
            dirty=and_(table.c.dirty, table.c.version != bindparam("ver")),
            file_sha256=bindparam("sha"),
        ),
        [{"tid": task_id, "ver": version, "sha": sha} for task_id, version, sha in written],
    )
