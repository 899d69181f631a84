"""Reconciliation: make the bucket equal to the store (and the store to Label Studio).

Webhooks alone cannot keep a bucket right: Label Studio never retries one, sends none for
task data edits or annotations imported with tasks, and objects can be removed behind our
back. A resync compares every object of the project with what the store renders (presence
and MD5): task files, the kept-fresh exports' per-task files and their aggregates. It writes
what is missing or different and deletes orphans, but only under names annosync gives:
``tasks/<id>.json`` and the folders of the kept-fresh formats (anything else is the user's).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync import db, documents, exports, generations, media, store, task_file, task_outputs
from sync.errors import InvalidInput
from sync.exporters import get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.limits import Limits
from sync.locks import ProjectLock
from sync.models import Task
from sync.pull import SnapshotResult, pull_project
from sync.runtime import Runtime

BATCH = 500
_TASK_KEY = re.compile(r"^tasks/(\d{1,19})\.json$")


class ResyncError(InvalidInput):
    """A resync cannot run as asked (the message is one line)."""


@dataclass
class ResyncSummary:
    """What a resync changed (or, in a dry run, would change)."""

    project: int
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    dry_run: bool = False
    pulled: SnapshotResult | None = None
    retried: int = 0  # tasks that could not be exported, to be tried again
    aggregates: int = 0  # aggregate files repaired (a dry run cannot know them)
    media: int = 0  # media files storage lost or damaged, owed again

    def line(self) -> str:
        verb = "would write" if self.dry_run else "written"
        gone = "would delete" if self.dry_run else "deleted"
        text = f"project {self.project}: {verb} {self.written}, {gone} {self.deleted}, "
        text += f"unchanged {self.unchanged}"
        if self.media:
            text += (
                f", {self.media} media files {'would be owed' if self.dry_run else 'owed'} again"
            )
        if self.aggregates:
            text += f", {self.aggregates} aggregate files repaired"
        if self.retried:
            text += f", {self.retried} unexported tasks {'to retry' if self.dry_run else 'retried'}"
        if self.pulled:
            text += (
                f" (from Label Studio: {self.pulled.tasks_seen} tasks seen, "
                f"{self.pulled.tasks_deleted} deleted, "
                f"{self.pulled.annotations_deleted} annotations deleted"
            )
            if self.pulled.tasks_unusable:
                text += (
                    f"; {self.pulled.tasks_unusable} unusable tasks left out, the first: "
                    f"{self.pulled.first_problem}"
                )
            text += ")"
        return text


def resync_project(
    rt: Runtime,
    project_id: int,
    *,
    from_labelstudio: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ResyncSummary:
    """Reconcile one project. Holds the project's drain lock, so it is safe while webhooks
    keep arriving: their drains wait, then apply on top of the reconciled state."""
    if from_labelstudio and rt.labelstudio is None:
        raise ResyncError("--from-labelstudio needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    if not from_labelstudio:  # from Label Studio, a project new to annosync is pulled whole
        with rt.sessions() as session:
            store.require_project(session, project_id)
    summary = ResyncSummary(project=project_id, dry_run=dry_run)
    private = dry_run and from_labelstudio
    with (
        ProjectLock(rt.worker_redis, project_id, wait_s=60) as lock,
        _session(rt, private) as session,
    ):
        if from_labelstudio:
            summary.pulled = pull_project(
                rt.labelstudio,
                session,
                project_id,
                Limits.from_settings(rt.settings),
                commit=not dry_run,
            )
        _reconcile_storage(rt, session, summary, lock, progress)
        summary.retried = store.retry_failed(session, project_id)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return summary


@contextmanager
def _session(rt: Runtime, private: bool) -> Iterator[Session]:
    """The resync's session; with ``private``, on SQLite, one on a copy of the database.

    A dry run that pulls from Label Studio writes the whole project into the store to see
    what would change, then rolls it all back: on SQLite that is the one write lock held for
    the whole run (minutes at 100k tasks), with every delivery meanwhile waiting, then
    answered 503. On a copy nobody waits. PostgreSQL locks only the rows written.
    """
    source = db.sqlite_file(rt.settings.database_url)
    if not (private and source):
        with rt.sessions() as session:
            yield session
        return
    with tempfile.TemporaryDirectory(prefix=".annosync-dry-run-", dir=Path(source).parent) as tmp:
        copy = Path(tmp) / "annosync.db"
        db.copy_sqlite(source, copy)
        engine = db.make_engine(f"sqlite:///{copy}")
        try:
            with Session(engine, expire_on_commit=False) as session:
                yield session
        finally:
            engine.dispose()


def _reconcile_storage(
    rt: Runtime, session: Session, summary: ResyncSummary, lock, progress
) -> None:
    project_id = summary.project
    listed = dict(rt.storage.list_digests("tasks/"))
    exported = dict(rt.storage.list_digests(exports.export_root(project_id, "")))
    total = session.scalar(
        select(func.count()).where(Task.project_id == project_id, Task.deleted.is_(False))
    )
    done, last_id = 0, 0
    while tasks := _live_tasks_after(session, project_id, last_id):
        annotations = documents.live_annotations(session, [t.id for t in tasks])
        owed, digests, docs = [], {}, []
        for task in tasks:
            key = documents.task_key(task.id)
            doc = documents.task_document(task, annotations[task.id])
            data = task_file.encode_task(doc)
            docs.append((doc, data))
            digests[task.id] = hashlib.sha256(data).hexdigest()
            if listed.pop(key, None) == hashlib.md5(data).hexdigest():
                summary.unchanged += 1
            else:
                owed.append((key, data))
        summary.written += len(owed)
        summary.written += task_outputs.repair_tasks(
            rt, session, project_id, docs, exported, dry_run=summary.dry_run
        )
        if not summary.dry_run:
            rt.storage.put_many(owed)
            # A dirty task stays owed: the drain writes it again with its export outputs,
            # which marking it written here would leave stale for good.
            written = [(t.id, t.version, digests[t.id]) for t in tasks if not t.dirty]
            store.mark_written(session, written)
            session.commit()  # a batch at a time: SQLite's other writers wait for one batch
        done, last_id = done + len(tasks), tasks[-1].id
        lock.renew()
        if progress:
            progress(done, total)
    orphans = _orphans(session, listed)
    summary.media = media.recheck(session, project_id, exported)
    if not summary.dry_run and rt.settings.export_formats:
        # The aggregates are rewritten whole; a repair of any file grows the generation.
        repaired = exports.aggregate(
            rt, project_id, lock, bump=summary.written > 0 or bool(orphans), listed=exported
        )
        summary.aggregates = repaired.repaired
        if repaired.keys:  # empty: a full rebuild is under way, and owns the folders
            owned = _in_format_folders(rt, session, project_id, exported)
            kept = repaired.keys | media.written_keys(session, project_id)
            orphans += sorted(set(owned) - kept)
    for key in orphans:
        summary.deleted += 1
        if not summary.dry_run:
            rt.storage.delete(key)
    # Dirty tombstones stay owed too: the drain removes their export outputs as well.


@dataclass
class Rebuilt:
    """What a rebuild did: tasks rendered, the generation, files repaired and removed."""

    tasks: int
    generation: int
    repaired: int
    removed: int


def rebuild(rt: Runtime, project_id: int, formats: tuple[str, ...] | None = None) -> Rebuilt:
    """Re-render a project's kept-fresh outputs (all formats, or only ``formats``), rewrite
    every aggregate, and delete what the formats' folders hold that nothing names (a file
    someone put there, or left by an older stem). The generation grows only when a file
    storage held changed: the same content keeps its generation."""
    root = exports.export_root(project_id, "")
    with ProjectLock(rt.worker_redis, project_id, wait_s=60, ttl_s=900) as lock:
        before = dict(rt.storage.list_digests(root))
        tasks = task_outputs.rebuild_project(rt, project_id, formats=formats)
        after = dict(rt.storage.list_digests(root))
        changed = sum(before.get(key) != digest for key, digest in after.items())
        aggregated = exports.aggregate(rt, project_id, lock, bump=changed > 0, listed=before)
        removed = _remove_export_orphans(rt, project_id, aggregated, after)
    return Rebuilt(tasks, aggregated.generation, changed + aggregated.repaired, removed)


def _remove_export_orphans(
    rt: Runtime, project_id: int, aggregated: exports.Aggregated, listed: dict[str, str | None]
) -> int:
    if not aggregated.keys:  # a rebuild's rendering was cut short: nothing to judge by
        return 0
    with rt.sessions() as session:
        owned = _in_format_folders(rt, session, project_id, listed)
        recorded = generations.recorded_keys(session, project_id)
        recorded |= media.written_keys(session, project_id)
    orphans = sorted(set(owned) - recorded - aggregated.keys)
    for key in orphans:
        rt.storage.delete(key)
    return len(orphans)


def _in_format_folders(
    rt: Runtime, session: Session, project_id: int, listed: dict[str, str | None]
) -> list[str]:
    """The keys of ``listed`` inside the folders of the project's kept-fresh formats (a
    format at the project's root owns only the files it writes, not the folder)."""
    config = exports.project_config(session, project_id)
    prefixes = tuple(
        exports.export_root(project_id, get_exporter(name).folder)
        for name in rt.settings.export_formats
        if get_exporter(name).folder and unfit_reason(get_exporter(name), config) is None
    )
    return [key for key in listed if prefixes and key.startswith(prefixes)]


def _live_tasks_after(session: Session, project_id: int, last_id: int) -> list[Task]:
    query = (
        select(Task)
        .where(Task.project_id == project_id, Task.deleted.is_(False), Task.id > last_id)
        .order_by(Task.id)
        .limit(BATCH)
    )
    return list(session.scalars(query))


def _orphans(session: Session, remaining: dict[str, str | None]) -> list[str]:
    """Task files under tasks/ that no live task (of any project) owns; other names there
    (a README) are the user's."""
    ids = {key: int(m.group(1)) for key in remaining if (m := _TASK_KEY.match(key))}
    candidates = list(set(ids.values()))
    owned: set[int] = set()
    for start in range(0, len(candidates), BATCH):
        chunk = candidates[start : start + BATCH]
        query = select(Task.id).where(Task.id.in_(chunk), Task.deleted.is_(False))
        owned.update(session.scalars(query))
    return [key for key, task_id in ids.items() if task_id not in owned]
