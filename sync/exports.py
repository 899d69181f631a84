"""Derived exports kept fresh: per-task outputs on every change, aggregates debounced.

When a task changes, each kept-fresh exporter renders that task only: its own files (a YOLO
label file) are written at once and its fragment is stored. A per-project aggregate job,
debounced and one at a time, rebuilds classes.txt, result.json, manifest.jsonl… from the
stored fragments without re-parsing any task.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from redis import Redis
from rq import Queue, Retry
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from sync import backoff, store
from sync.exporters import ExportContext, get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.exporters.regions import context_from_config
from sync.limits import Limits, task_problem
from sync.locks import ProjectLock
from sync.models import Annotation, ExportFragment, Project, Task
from sync.payloads import storable
from sync.runtime import Runtime

log = logging.getLogger("annosync.exports")
# The rebuild renews its lock after each format, so a killed worker frees the project's
# exports within this, however big the project.
LOCK_TTL_S = 15
# A queued rebuild that is lost (Redis restarted, worker killed) stops blocking new requests
# after this long; the sweep then asks again for projects whose aggregates are still owed.
FLAG_TTL_S = 30


def export_root(project_id: int, folder: str) -> str:
    """Storage prefix of a project's format folder."""
    return f"exports/{int(project_id)}/" + (f"{folder}/" if folder else "")


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        project = Project(
            id=project_id,
            deleted=False,
            config_version=0,
            exports_config_version=0,
            export_generation=0,
            export_changes=0,
        )
        session.add(project)
    return project


def context_for(session: Session, project_id: int, settings) -> ExportContext:
    """The project's export context; its class list starts from the label config and holds
    at most ``ANNOSYNC_MAX_LABELS`` classes."""
    project = _project(session, project_id)
    parsed = orjson.loads(project.parsed_config) if project.parsed_config else None
    classes = orjson.loads(project.classes) if project.classes else []
    ctx = context_from_config(project_id, classes, parsed, settings.split)
    ctx.max_classes = settings.max_labels
    project.classes = orjson.dumps(ctx.classes).decode()
    return ctx


def project_config(session: Session, project_id: int) -> dict[str, Any] | None:
    """The project's parsed label config, when annosync has seen it."""
    project = session.get(Project, project_id)
    return orjson.loads(project.parsed_config) if project and project.parsed_config else None


def fitting_formats(names, ctx: ExportContext) -> list[str]:
    """The kept-fresh formats the project's label config can be exported to (a format that
    does not fit would only produce empty files)."""
    return [name for name in names if unfit_reason(get_exporter(name), ctx.config) is None]


@dataclass
class TaskOutputs:
    """The per-task outputs of changed tasks, rendered but not yet written or recorded.

    Rendering only reads the database; writing touches storage only; recording is the only
    database write. So a caller can write to storage before it writes to the database: on
    SQLite the write lock (which the receivers wait on) is then held for the statements
    alone, not for rendering and storage writes (measured: 20-170 ms per batch of tasks
    while rendering three formats inside the lock).
    """

    project: Project
    writes: list[tuple[str, bytes]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
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
            .values(export_changes=Project.export_changes + self.changed)
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
) -> TaskOutputs | None:
    """Render the kept-fresh formats for changed tasks and deleted ones (None: nothing to
    do); see :class:`TaskOutputs` for the order of what follows."""
    formats = rt.settings.export_formats
    if not formats or (not tasks and not deleted):
        return None
    with session.no_autoflush:  # rendering must not take the write lock
        ctx = context_for(session, project_id, rt.settings)
        outputs = TaskOutputs(_project(session, project_id))
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
    for doc, raw in tasks:
        problem = task_problem(doc, limits)
        done = []
        try:
            for name in [] if problem else names:
                done.append((name, get_exporter(name).render_task(doc, raw, ctx)))
        except Exception as exc:  # the content of one task must never stop its project
            problem = f"{name}: {type(exc).__name__}: {exc}"
        if problem:
            outputs.failed[doc["id"]] = storable(problem, 500)
            log.warning("project %s: task %s not exported: %s", ctx.project_id, doc["id"], problem)
            continue
        outputs.exported.append(doc["id"])
        for name, out in done:
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
) -> None:
    """Render, write and record the kept-fresh formats' outputs of changed tasks."""
    outputs = render_tasks(rt, session, project_id, tasks, deleted)
    if outputs is not None:
        rt.storage.put_many(outputs.writes)
        outputs.delete_stale(rt.storage)
        outputs.record(session)


def _collect(session, exporter, ctx, rendered, deleted, outputs: TaskOutputs) -> None:
    """Add one format's rendered per-task outputs (``(task id, TaskExport)``) and the removal
    of deleted tasks' outputs to ``outputs``.

    Every file is written, even when its digest equals the stored one: a worker killed
    between the storage write and the commit leaves storage ahead of the stored digests, so
    the digests cannot vouch for what storage holds."""
    root = export_root(ctx.project_id, exporter.folder)
    ids = [task_id for task_id, _ in rendered] + list(deleted)
    previous = {
        row.task_id: row
        for row in session.scalars(
            select(ExportFragment).where(
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
        outputs.stale += [key for key in old_digests if key not in digests]
        outputs.changed += old is None or old.fragment != out.fragment or old_digests != digests
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
    outputs.fragments.append((exporter.name, ids, rows))


def needs_full_rebuild(session: Session, project_id: int) -> bool:
    """Whether the label config changed since the per-task outputs were rendered."""
    project = session.get(Project, project_id)
    return project is not None and project.exports_config_version != project.config_version


def rebuild_project(rt: Runtime, project_id: int, batch: int = 500) -> int:
    """Re-render every task's outputs of the kept-fresh formats (after a label-config change,
    or on demand) and queue the aggregates. The caller holds the project's drain lock.
    Returns the number of tasks rendered.

    Each chunk is committed on its own: as one transaction, a rebuild held SQLite's write
    lock throughout (31 s for 100k tasks), and receivers gave up waiting. The aggregates
    never mix chunks of two label configs: :func:`write_aggregates` skips a project until
    its rebuild is complete (the last commit), and the rebuild asks for them then."""
    rendered = 0
    with rt.sessions() as session:
        project = _project(session, project_id)
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
        update_tasks(rt, session, project_id, [], sorted(gone))
        session.commit()
        for chunk in _chunks(store.project_documents(session, project_id, batch), batch):
            update_tasks(rt, session, project_id, chunk, [])
            session.commit()
            rendered += len(chunk)
        project.exports_config_version = project.config_version
        session.commit()
    return rendered


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_aggregates(rt: Runtime, project_id: int, lock: ProjectLock | None = None) -> int:
    """Rebuild every kept-fresh aggregate from the stored fragments; returns the generation.
    ``lock`` (the project's export lock) is renewed after each format. The project's new
    state is only flushed at the commit, after the storage writes (see :class:`TaskOutputs`)."""
    with rt.sessions() as session, session.no_autoflush:
        if needs_full_rebuild(session, project_id):  # mid-rebuild: it asks again when done
            return _project(session, project_id).export_generation
        # The changes this rebuild covers: counted before any fragment is read, so changes
        # recorded meanwhile stay counted and ask for the next rebuild.
        consumed = _project(session, project_id).export_changes
        ctx = context_for(session, project_id, rt.settings)
        digest = hashlib.sha256()
        formats = fitting_formats(rt.settings.export_formats, ctx)
        for name in formats:
            exporter = get_exporter(name)
            fragments = session.scalars(
                select(ExportFragment.fragment)
                .where(ExportFragment.project_id == project_id, ExportFragment.format == name)
                .order_by(ExportFragment.task_id)
                .execution_options(yield_per=1000)
            )
            files = exporter.aggregate(fragments, ctx)
            root = export_root(project_id, exporter.folder)
            rt.storage.put_many([(root + path, data) for path, data in files.items()])
            if lock is not None:
                lock.renew()
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        project = _project(session, project_id)
        if project.export_digest != digest.hexdigest() or consumed:
            project.export_generation += 1
        project.export_digest = digest.hexdigest()
        rt.storage.put(
            export_root(project_id, "") + "_state.json",
            _state(session, project, formats),
        )
        session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(export_changes=Project.export_changes - consumed)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return project.export_generation


def _state(session: Session, project: Project, formats) -> bytes:
    tasks, updated = session.execute(
        select(func.count(), func.max(Task.updated_at)).where(
            Task.project_id == project.id, Task.deleted.is_(False)
        )
    ).one()
    annotations = session.scalar(
        select(func.count()).where(
            Annotation.project_id == project.id, Annotation.deleted.is_(False)
        )
    )
    return orjson.dumps(
        {
            "project": project.id,
            "generation": project.export_generation,
            "formats": list(formats),
            "counts": {"tasks": tasks, "annotations": annotations},
            "updated_at": updated,
        },
        option=orjson.OPT_INDENT_2,
    )


def projects_owing_aggregates(session: Session) -> list[int]:
    """Projects whose per-task outputs changed since their aggregates were last rebuilt."""
    return list(session.scalars(select(Project.id).where(Project.export_changes > 0)))


def _flag(project_id: int) -> str:
    return f"annosync:aggregate-queued:{project_id}"


def request_aggregates(redis: Redis, settings, project_id: int) -> bool:
    """Queue the project's aggregate rebuild after the debounce, unless one is waiting."""
    if not settings.export_formats or not redis.set(
        _flag(project_id), b"1", nx=True, ex=FLAG_TTL_S
    ):
        return False
    if backoff.waiting(redis, _unit(project_id)):  # failed just now: the sweep asks again
        redis.delete(_flag(project_id))
        return False
    queue = Queue(settings.queue_name, connection=redis)
    options = {
        "job_timeout": 3600,
        "result_ttl": 60,
        "retry": Retry(max=5, interval=[1, 5, 15, 60, 120]),
    }
    if settings.export_debounce_ms:
        queue.enqueue_in(
            timedelta(milliseconds=settings.export_debounce_ms),
            aggregate_job,
            project_id,
            **options,
        )
    else:
        queue.enqueue(aggregate_job, project_id, **options)
    return True


def aggregate_job(project_id: int) -> int:
    """RQ job: rebuild a project's aggregates, one rebuild per project at a time."""
    from sync.jobs import current_runtime

    rt = current_runtime()
    redis = rt.worker_redis
    with ProjectLock(
        redis, project_id, wait_s=LOCK_TTL_S + 5, ttl_s=LOCK_TTL_S, purpose="export"
    ) as lock:
        redis.delete(_flag(project_id))  # changes from now on queue the next rebuild
        try:
            generation = write_aggregates(rt, project_id, lock)
        except Exception as exc:
            delay = backoff.failed(redis, _unit(project_id))
            log.warning("exports of project %s failed (%s); retry in %.0fs", project_id, exc, delay)
            raise
        backoff.succeeded(redis, _unit(project_id))
        return generation


def _unit(project_id: int) -> str:
    return f"exports-{project_id}"
