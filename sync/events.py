"""Applying Label Studio actions to the task store, one function per action.

Each delivery is applied with its inbox sequence number (its delivery id): the objects it
creates remember it, and a delete never removes an object created by a later delivery (a
replayed old delete, or a project-wide delete drained after a re-create of the same id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from sync import store
from sync.errors import AnnosyncError
from sync.labelconfig import LabelConfigError, parse_label_config
from sync.limits import Limits, parsed_config_issues
from sync.models import Project, Task
from sync.payloads import normalise_ts, storable


class ApplyError(AnnosyncError):
    """A delivery cannot be applied as it stands (kept as failed, replayable)."""


class ApplyOptions:
    """What the worker's settings decide about applying."""

    def __init__(self, project_delete: str = "delete", limits: Limits | None = None) -> None:
        self.project_delete = project_delete
        self.limits = limits or Limits()


@dataclass(frozen=True)
class Applying:
    """One delivery being applied: the project its URL named, the options, its sequence
    number in the inbox (None: not from the inbox, e.g. a pull)."""

    project_id: int | None
    options: ApplyOptions
    seq: int | None = None


Handler = Callable[[Session, dict[str, Any], Applying], None]
HANDLERS: dict[str, Handler] = {}


def handles(*actions: str) -> Callable[[Handler], Handler]:
    """Register the function that applies ``actions``."""

    def decorate(func: Handler) -> Handler:
        for action in actions:
            HANDLERS[action] = func
        return func

    return decorate


def apply(
    session: Session,
    body: dict[str, Any],
    project_id: int | None,
    options: ApplyOptions | None = None,
    seq: int | None = None,
) -> None:
    """Apply one delivery body (``seq``: its delivery id); unknown actions change nothing."""
    ctx = Applying(project_id, options or ApplyOptions(), seq)
    if isinstance(body.get("project"), dict) and body["action"] != "PROJECT_DELETED":
        upsert_project(session, body["project"], ctx.options.limits)
    handler = HANDLERS.get(body["action"])
    if handler is not None:
        handler(session, body, ctx)


def upsert_project(session: Session, data: dict[str, Any], limits: Limits | None = None) -> bool:
    """Store a project's title and label config; True when the config changed.

    A config annosync cannot use (not XML, over the limits) is not adopted: the project
    keeps its last good one, the reason is kept in ``config_error`` for status, and the rest
    of the delivery applies (its tasks and annotations are still true)."""
    project = session.get(Project, data["id"])
    updated = normalise_ts(data.get("updated_at"))
    if project is not None and _holds(project, data, updated):
        return False  # every delivery repeats its project: most find it stored already
    if project is None:
        project = Project(id=data["id"], deleted=False, config_version=0)
        session.add(project)
    elif project.updated_at and updated and updated < project.updated_at:
        return False
    project.title = _title(data, project.title)
    project.updated_at = updated or project.updated_at
    project.deleted = False
    config = data.get("label_config")
    if not isinstance(config, str):
        return False
    digest = _digest(config)
    if digest in (project.config_digest, project.refused_digest):
        return False
    problem = _config_problem(config, limits or Limits())
    if isinstance(problem, str):
        project.config_error, project.refused_digest = problem, digest
        return False
    project.label_config, project.config_digest = config, digest
    project.parsed_config = orjson.dumps(problem).decode()
    project.config_error = project.refused_digest = None
    project.config_version += 1
    return True


def _config_problem(config: str, limits: Limits) -> dict[str, Any] | str:
    """The parsed config, or why it is refused."""
    try:
        parsed = parse_label_config(config)
    except LabelConfigError as exc:
        return storable(f"label config refused: {exc}")
    if issues := parsed_config_issues(parsed, limits, "label_config"):
        return storable(f"label config refused: {issues[0].message}")
    return parsed


def _title(data: dict[str, Any], stored: str | None) -> str | None:
    """The project's title as stored: NUL replaced (PostgreSQL text cannot hold it, and the
    title arrives with every delivery of the project, so it would fail them all)."""
    title = data.get("title", stored)
    return storable(title, 10_000) if isinstance(title, str) else title


def _holds(project: Project, data: dict[str, Any], updated: str | None) -> bool:
    """Whether the stored project already is what ``data`` would make it."""
    config = data.get("label_config")
    return (
        not project.deleted
        and project.updated_at == (updated or project.updated_at)
        and project.title == _title(data, project.title)
        and (
            not isinstance(config, str)
            or config == project.label_config
            or (project.config_error is not None and _digest(config) == project.refused_digest)
        )
    )


def _digest(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()


@handles("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
def _annotation(session, body, ctx: Applying) -> None:
    _annotations(session, [body["annotation"]], [body["task"]], ctx)


@handles("ANNOTATIONS_CREATED")
def _annotations_created(session, body, ctx: Applying) -> None:
    _annotations(session, body["annotation"], body["task"], ctx)


def _annotations(session, annotations, tasks, ctx: Applying) -> None:
    by_id = {t["id"]: t for t in tasks}
    live: dict[int, Task | None] = {}
    for annotation in annotations:
        task_id = annotation.get("task") or (tasks[0]["id"] if len(tasks) == 1 else None)
        if task_id not in by_id:
            raise ApplyError(f"annotation {annotation['id']}: its task is not in the payload")
        if task_id not in live:
            live[task_id] = store.upsert_task(session, by_id[task_id], ctx.project_id, ctx.seq)
        if live[task_id] is not None:
            store.upsert_annotation(session, annotation, live[task_id], ctx.seq)


@handles("ANNOTATIONS_DELETED")
def _annotations_deleted(session, body, ctx: Applying) -> None:
    store.delete_annotations(session, [a["id"] for a in body["annotations"]], ctx.seq)


@handles("TASKS_CREATED")
def _tasks_created(session, body, ctx: Applying) -> None:
    tasks = body["tasks"]
    existing = set(session.scalars(select(Task.id).where(Task.id.in_([t["id"] for t in tasks]))))
    fresh = {
        t["id"]: t
        for t in tasks
        if t["id"] not in existing and not t.get("annotations") and not t.get("completions")
    }
    if fresh:
        # Bulk insert: a 5,000-task import is one statement, not 5,000 round trips.
        rows = [_new_task_row(t, ctx.project_id, ctx.seq) for t in fresh.values()]
        session.execute(insert(Task), rows)
    for task in tasks:
        if task["id"] not in fresh:
            store.upsert_task(session, task, ctx.project_id, ctx.seq)


def _new_task_row(task: dict[str, Any], project_id: int | None, seq: int | None) -> dict:
    return {
        "id": task["id"],
        "project_id": task["project"] if isinstance(task.get("project"), int) else project_id,
        "body": orjson.dumps(task),
        "created_at": normalise_ts(task.get("created_at")),
        "updated_at": normalise_ts(task.get("updated_at")),
        "deleted": False,
        "version": 1,
        "dirty": True,
        "born": seq,
    }


@handles("TASKS_DELETED")
def _tasks_deleted(session, body, ctx: Applying) -> None:
    store.delete_tasks(session, [t["id"] for t in body["tasks"]], ctx.project_id, ctx.seq)


@handles("PROJECT_CREATED", "PROJECT_UPDATED")
def _project(session, body, ctx: Applying) -> None:
    pass  # upsert_project already ran for every delivery carrying a project


@handles("PROJECT_DELETED")
def _project_deleted(session, body, ctx: Applying) -> None:
    project_id = body["project"]["id"]
    project = session.get(Project, project_id)
    if project is not None:
        project.deleted = True
    if ctx.options.project_delete == "delete":
        ids = store.project_task_ids(session, project_id)
        store.delete_tasks(session, ids, project_id, ctx.seq)
