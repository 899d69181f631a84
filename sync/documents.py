"""Tasks as documents: the bytes of ``tasks/<id>.json`` and what exporters read.

A task's document is its entry in Label Studio's JSON export (data, meta, every live
annotation, predictions); the same stored state always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from sync.models import Annotation, Task
from sync.task_file import encode_task

#: Keys of a webhook task that Label Studio's JSON export does not carry.
NOT_IN_EXPORT = frozenset({"is_labeled", "overlap", "precomputed_agreement", "file_upload"})
#: Keys rendered separately (or kept in their own rows).
NESTED = frozenset({"id", "annotations", "completions", "predictions", "drafts"})


def task_key(task_id: int) -> str:
    """Storage key of a task's file."""
    return f"tasks/{int(task_id)}.json"


def live_annotations(session: Session, task_ids: Iterable[int]) -> dict[int, list[dict]]:
    """The live annotations of each task, oldest id first (one query for all tasks)."""
    found: dict[int, list[dict]] = {task_id: [] for task_id in task_ids}
    if found:
        rows = session.execute(
            select(Annotation.task_id, Annotation.body)
            .where(Annotation.task_id.in_(found), Annotation.deleted.is_(False))
            .order_by(Annotation.id)
        )
        for task_id, body in rows:
            found[task_id].append(orjson.loads(body))
    return found


def task_document(task: Task | Row, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """The task as an entry of Label Studio's JSON export, with all its annotations (of
    ``task``, only ``id`` and ``body`` are read)."""
    body = orjson.loads(task.body)
    doc: dict[str, Any] = {
        "id": task.id,
        "annotations": annotations,
        "drafts": body.get("drafts", []),
        "predictions": body.get("predictions", []),
    }
    doc.update((k, v) for k, v in body.items() if k not in NESTED and k not in NOT_IN_EXPORT)
    doc["total_annotations"] = sum(1 for a in annotations if not a.get("was_cancelled"))
    doc["cancelled_annotations"] = sum(1 for a in annotations if a.get("was_cancelled"))
    return doc


def render_task(task: Task, annotations: list[dict[str, Any]]) -> bytes:
    """The bytes of ``tasks/<id>.json``."""
    return encode_task(task_document(task, annotations))


def project_documents(session: Session, project_id: int, batch: int = 500):
    """``(document, stored bytes)`` of every live task of a project, in id order, a batch of
    rows at a time."""
    last_id = 0
    while tasks := list(
        session.execute(  # plain (id, body) rows: task_document reads no more of a Task
            select(Task.id, Task.body)
            .where(Task.project_id == project_id, Task.deleted.is_(False), Task.id > last_id)
            .order_by(Task.id)
            .limit(batch)
        )
    ):
        annotations = live_annotations(session, [t.id for t in tasks])
        for task in tasks:
            doc = task_document(task, annotations[task.id])
            yield doc, encode_task(doc)
        last_id = tasks[-1].id
