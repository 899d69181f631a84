"""Derived exports kept fresh: the project's export context, and its aggregates.

When a task changes, each kept-fresh exporter renders that task only (see
:mod:`sync.task_outputs`): its own files (a YOLO label file) are written at once and its
fragment is stored. A per-project aggregate job, debounced and one at a time, rebuilds
classes.txt, result.json, manifest.jsonl… from the stored fragments without re-parsing any
task.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from redis import Redis
from rq import Queue, Retry
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from sync import backoff, generations, triggers
from sync.exporters import ExportContext, get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.exporters.classes import context_from_config
from sync.exporters.files import export_root
from sync.locks import ProjectLock
from sync.models import Annotation, ExportFragment, Project, Task
from sync.runtime import Runtime, current_runtime

log = logging.getLogger("annosync.exports")
# The rebuild renews its lock after each format, so a killed worker frees the project's
# exports within this, however big the project.
LOCK_TTL_S = 15
# A queued rebuild that is lost (Redis restarted, worker killed) stops blocking new requests
# after this long; the sweep then asks again for projects whose aggregates are still owed.
FLAG_TTL_S = 30


def project_row(session: Session, project_id: int) -> Project:
    """The project's row, added (not yet flushed) when annosync has not seen it."""
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
    project = project_row(session, project_id)
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


def needs_full_rebuild(session: Session, project_id: int) -> bool:
    """Whether the label config changed since the per-task outputs were rendered."""
    project = session.get(Project, project_id)
    return project is not None and project.exports_config_version != project.config_version


@dataclass(frozen=True)
class Aggregated:
    """What an aggregate rebuild left: the project's generation, the keys it wrote, and how
    many of them storage held different bytes of (counted only when told what it held)."""

    generation: int
    keys: frozenset[str] = frozenset()
    repaired: int = 0


def write_aggregates(rt: Runtime, project_id: int, lock: ProjectLock | None = None) -> int:
    """Rebuild every kept-fresh aggregate; returns the generation (see :func:`aggregate`)."""
    return aggregate(rt, project_id, lock).generation


def aggregate(
    rt: Runtime,
    project_id: int,
    lock: ProjectLock | None = None,
    *,
    bump: bool = False,
    listed: dict[str, str | None] | None = None,
) -> Aggregated:
    """Rebuild every kept-fresh aggregate from the stored fragments. ``lock`` (the project's
    drain lock) is renewed after each format. The generation grows when the aggregates or
    the per-task outputs changed, or with ``bump``, or when an aggregate storage held
    (``listed``: key -> md5) was missing or damaged: after a repair, readers of the live
    folders learn that they changed. The project's new state is only flushed at the
    commit, after the storage writes (see :class:`TaskOutputs`)."""
    with rt.sessions() as session, session.no_autoflush:
        # One rebuild per project at a time, whatever happens to the Redis lock (a Redis
        # restarted empty forgets it): on PostgreSQL the project's row stays locked until
        # this rebuild commits, so a second one waits and then sees the first's result.
        session.execute(select(Project.id).where(Project.id == project_id).with_for_update())
        if needs_full_rebuild(session, project_id):  # mid-rebuild: it asks again when done
            return Aggregated(project_row(session, project_id).export_generation)
        # The changes this rebuild covers: counted before any fragment is read, so changes
        # recorded meanwhile stay counted and ask for the next rebuild.
        consumed = project_row(session, project_id).export_changes
        ctx = context_for(session, project_id, rt.settings)
        digest = hashlib.sha256()
        formats = fitting_formats(rt.settings.export_formats, ctx)
        written: dict[str, tuple[str, bytes]] = {}  # key -> (format, bytes)
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
            written.update((root + path, (name, data)) for path, data in files.items())
            if lock is not None:
                lock.renew()
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        project = project_row(session, project_id)
        repaired = (
            sum(
                listed.get(key) != hashlib.md5(data).hexdigest()
                for key, (_f, data) in written.items()
            )
            if listed is not None
            else 0
        )
        bumped = project.export_digest != digest.hexdigest() or bool(consumed or bump or repaired)
        project.export_generation += bumped
        project.export_digest = digest.hexdigest()
        state_key = export_root(project_id, "") + "_state.json"
        written[state_key] = (generations.STATE, _state(session, project, formats))
        rt.storage.put(state_key, written[state_key][1])
        captured = generations.capture(rt, session, project, formats, written) if bumped else None
        session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(
                export_changes=Project.export_changes - consumed,
                # All consumed: the exports are final. Else the oldest change is unknown; the
                # time kept is that of an older one, so the lag reported is never too small.
                changes_since=case(
                    (Project.export_changes - consumed <= 0, None), else_=Project.changes_since
                ),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if captured is not None:
            captured.publish(rt.storage)
        return Aggregated(project.export_generation, frozenset(written), repaired)


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
    """RQ job: rebuild a project's aggregates and capture its generation. It holds the
    project's drain lock: no task file changes meanwhile, so the aggregates, the per-task
    files and the generation's manifest describe one state."""
    rt = current_runtime()
    redis = rt.worker_redis
    with ProjectLock(redis, project_id, ttl_s=LOCK_TTL_S) as lock:
        redis.delete(_flag(project_id))  # changes from now on queue the next rebuild
        try:
            generation = write_aggregates(rt, project_id, lock)
        except Exception as exc:
            delay = backoff.failed(redis, _unit(project_id))
            log.warning("exports of project %s failed (%s); retry in %.0fs", project_id, exc, delay)
            raise
        backoff.succeeded(redis, _unit(project_id))
    if rt.settings.triggers:  # after the lock: sending waits on other people's servers
        triggers.consider(rt, project_id)
    return generation


def _unit(project_id: int) -> str:
    return f"exports-{project_id}"
