"""Per-task outputs of the kept-fresh formats: rendered as tasks change, and all at once
after a label-config change (a full rebuild).

A task's outputs are its own files (a YOLO label file) and its fragments, from which
:mod:`sync.exports` rebuilds the aggregates. A task that cannot be exported (over the
limits, or an exporter fails on it) is left out of every format, with its reason kept on
the task, and the rest of its project goes on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from sync import documents, generations, media
from sync.exporters import ExportContext, get_exporter, render_checked
from sync.exports import context_for, export_root, fitting_formats, project_row
from sync.limits import Limits
from sync.models import ExportFragment, Project, Task
from sync.payloads import storable
from sync.runtime import Runtime

log = logging.getLogger("annosync.exports")


@dataclass
class TaskOutputs:
    """The per-task outputs of changed tasks, rendered but not yet written or recorded.

    Rendering only reads the database; writing touches storage only; recording is the only
    database write. So a caller can write to storage before it writes to the database: on
    SQLite the write lock (which the receivers wait on) is then held for the statements
    alone, not for rendering and storage writes (20-170 ms per batch of tasks with three
    formats).
    """

    project: Project
    writes: list[tuple[str, bytes]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    # (format, ids of the tasks whose fragments are replaced, their new rows): unchanged
    # fragments are not rewritten, and a deleted task's has no new row.
    fragments: list[tuple[str, list[int], list[dict[str, Any]]]] = field(default_factory=list)
    changed: int = 0
    classes: str = ""
    exported: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # task id -> why not exported

    def record(self, session: Session) -> None:
        """Store the fragments and file digests (once `writes` are in storage), and which
        tasks could not be exported and why."""
        _record_failures(session, self.exported, self.failed)
        for name, ids, rows in self.fragments:
            if not ids:
                continue
            session.execute(
                delete(ExportFragment)
                .where(
                    ExportFragment.project_id == self.project.id,
                    ExportFragment.format == name,
                    ExportFragment.task_id.in_(ids),
                )
                # The loaded fragments are not used again: matching them in memory costs more.
                .execution_options(synchronize_session=False)
            )
            if rows:
                session.execute(ExportFragment.__table__.insert(), rows)
        # In SQL, not read-modify-write: the aggregate job consumes changes concurrently
        # (see write_aggregates), and a lost count would leave the aggregates stale for good.
        session.flush()  # a project first seen now must exist for the UPDATE
        session.execute(
            update(Project)
            .where(Project.id == self.project.id)
            .values(
                export_changes=Project.export_changes + self.changed,
                changes_since=func.coalesce(Project.changes_since, datetime.now(UTC))
                if self.changed
                else Project.changes_since,
            )
            .execution_options(synchronize_session=False)
        )
        self.project.classes = self.classes  # labels first seen just now

    def delete_stale(self, storage) -> None:
        """Remove the files of outputs that are gone."""
        for key in self.stale:
            storage.delete(key)


def render_tasks(
    rt: Runtime,
    session: Session,
    project_id: int,
    tasks: list[tuple[dict[str, Any], bytes]],
    deleted: list[int],
    formats: tuple[str, ...] | None = None,
) -> TaskOutputs | None:
    """Render the kept-fresh formats (or only ``formats``) for changed tasks and deleted
    ones (None: nothing to do); see :class:`TaskOutputs` for the order of what follows."""
    formats = rt.settings.export_formats if formats is None else formats
    if not formats or (not tasks and not deleted):
        return None
    with session.no_autoflush:  # rendering must not take the write lock
        ctx = context_for(session, project_id, rt.settings)
        outputs = TaskOutputs(project_row(session, project_id))
        names = fitting_formats(formats, ctx)
        rendered = _render_each(names, ctx, tasks, Limits.from_settings(rt.settings), outputs)
        # A task that failed is absent from every format (as if deleted), never half there.
        gone = [*deleted, *outputs.failed]
        for name in names:
            _collect(session, get_exporter(name), ctx, rendered[name], gone, outputs)
    outputs.classes = orjson.dumps(ctx.classes).decode()
    return outputs


def _render_each(names, ctx: ExportContext, tasks, limits: Limits, outputs: TaskOutputs):
    """Every format's export of every task, one task at a time: a task over the limits, or
    one an exporter cannot render, is recorded in ``outputs.failed`` and the others go on."""
    rendered: dict[str, list] = {name: [] for name in names}
    exporters = [get_exporter(name) for name in names]
    for doc, raw in tasks:
        result = render_checked(exporters, doc, raw, ctx, limits)
        if isinstance(result, str):
            outputs.failed[doc["id"]] = storable(result)
            log.warning("project %s: task %s not exported: %s", ctx.project_id, doc["id"], result)
            continue
        outputs.exported.append(doc["id"])
        for name, out in zip(names, result, strict=True):
            rendered[name].append((doc["id"], out))
    return rendered


def _record_failures(session: Session, exported: list[int], failed: dict[int, str]) -> None:
    if failed:
        session.execute(
            update(Task.__table__)
            .where(Task.__table__.c.id == bindparam("tid"))
            .values(error=bindparam("why")),
            [{"tid": task_id, "why": why} for task_id, why in failed.items()],
        )
    if exported:
        session.execute(
            update(Task.__table__)
            .where(Task.__table__.c.id.in_(exported), Task.__table__.c.error.is_not(None))
            .values(error=None)
        )


def update_tasks(
    rt: Runtime,
    session: Session,
    project_id: int,
    tasks: list[tuple[dict[str, Any], bytes]],
    deleted: list[int],
    formats: tuple[str, ...] | None = None,
) -> None:
    """Render, write and record the kept-fresh formats' outputs of changed tasks."""
    outputs = render_tasks(rt, session, project_id, tasks, deleted, formats)
    if outputs is not None:
        copies, objects = generations.objects_to_write(
            session, rt.settings, project_id, outputs.writes
        )
        rt.storage.put_many(outputs.writes)
        rt.storage.copy_many(copies)
        outputs.delete_stale(rt.storage)
        outputs.record(session)
        generations.record_objects(session, objects)


def repair_tasks(
    rt: Runtime,
    session: Session,
    project_id: int,
    tasks: list[tuple[dict[str, Any], bytes]],
    listed: dict[str, str | None],
    *,
    dry_run: bool = False,
) -> int:
    """Render the kept-fresh outputs of ``tasks`` and write those that storage lacks or holds
    different bytes of (``listed``: key -> md5 of what storage holds; the keys rendered are
    removed from it, so what remains is owned by no task). Returns how many files were (or,
    in a dry run, would be) written."""
    outputs = render_tasks(rt, session, project_id, tasks, [])
    if outputs is None:
        return 0
    owed = [
        (key, data)
        for key, data in outputs.writes
        if listed.pop(key, None) != hashlib.md5(data).hexdigest()
    ]
    if not dry_run:
        outputs.writes = owed
        copies, objects = generations.objects_to_write(session, rt.settings, project_id, owed)
        rt.storage.put_many(owed)
        rt.storage.copy_many(copies)
        outputs.record(session)
        generations.record_objects(session, objects)
    return len(owed)


def _collect(session, exporter, ctx, rendered, deleted, outputs: TaskOutputs) -> None:
    """Add one format's rendered per-task outputs (``(task id, TaskExport)``) and the removal
    of deleted tasks' outputs to ``outputs``.

    Every file is written, even when its digest equals the stored one: a worker killed
    between the storage write and the commit leaves storage ahead of the stored digests, so
    the digests cannot vouch for what storage holds."""
    root = export_root(ctx.project_id, exporter.folder)
    ids = [task_id for task_id, _ in rendered] + list(deleted)
    previous = {  # plain rows, not ORM objects: they are only read, and replaced in SQL
        row.task_id: row
        for row in session.execute(
            select(ExportFragment.task_id, ExportFragment.files, ExportFragment.fragment).where(
                ExportFragment.project_id == ctx.project_id,
                ExportFragment.format == exporter.name,
                ExportFragment.task_id.in_(ids),
            )
        )
    }
    rows = []
    for task_id, out in rendered:
        digests = {
            root + path: hashlib.sha256(data).hexdigest() for path, data in out.files.items()
        }
        old = previous.get(task_id)
        old_digests = orjson.loads(old.files) if old else {}
        outputs.writes += [(root + path, data) for path, data in out.files.items()]
        if old is not None and old.fragment == out.fragment and old_digests == digests:
            continue  # its row already says this (a rebuild re-renders mostly the same)
        outputs.stale += [key for key in old_digests if key not in digests]
        outputs.changed += 1
        rows.append(
            {
                "project_id": ctx.project_id,
                "format": exporter.name,
                "task_id": task_id,
                "files": orjson.dumps(digests).decode(),
                "fragment": out.fragment,
            }
        )
    for task_id in deleted:
        if task_id in previous:
            outputs.stale += list(orjson.loads(previous[task_id].files))
            outputs.changed += 1
    replaced = [*deleted, *(row["task_id"] for row in rows)]
    outputs.fragments.append((exporter.name, replaced, rows))


def rebuild_project(
    rt: Runtime, project_id: int, batch: int = 500, formats: tuple[str, ...] | None = None
) -> int:
    """Re-render every task's outputs of the kept-fresh formats (after a label-config change,
    or on demand: then perhaps only ``formats``, if the config did not change). The caller
    holds the project's drain lock and rebuilds the aggregates after. Returns the number of
    tasks rendered.

    Each chunk is committed on its own: as one transaction, a rebuild held SQLite's write
    lock throughout (31 s for 100k tasks), and receivers gave up waiting. The aggregates
    never mix chunks of two label configs: :func:`write_aggregates` skips a project until
    its rebuild is complete (the last commit), and the rebuild asks for them then."""
    rendered = 0
    with rt.sessions() as session:
        project = project_row(session, project_id)
        live = set(
            session.scalars(
                select(Task.id).where(Task.project_id == project_id, Task.deleted.is_(False))
            )
        )
        gone = (
            set(
                session.scalars(
                    select(ExportFragment.task_id)
                    .where(ExportFragment.project_id == project_id)
                    .distinct()
                )
            )
            - live
        )
        if project.exports_config_version != project.config_version:
            formats = None  # every format's outputs are of the old config
        update_tasks(rt, session, project_id, [], sorted(gone), formats)
        session.commit()
        media.note_tasks(rt, session, project_id, [], sorted(gone))
        for chunk in _chunks(documents.project_documents(session, project_id, batch), batch):
            update_tasks(rt, session, project_id, chunk, [], formats)
            media.note_tasks(rt, session, project_id, [doc for doc, _raw in chunk], [])
            session.commit()
            rendered += len(chunk)
        project.exports_config_version = project.config_version
        session.commit()
    return rendered


def _chunks(items, size: int):
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk
