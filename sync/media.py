"""Media beside the labels: each task's image copied to ``<format>/images/<stem><ext>`` for
the kept-fresh formats that name image files, so a trainer pointed at the bucket trains.

The drain only notes what each task's media should be (:func:`note_tasks`: a row per task,
owed when its URL or its keys change) and never waits on a fetch: labels are never held
back by media. A thread in each worker (:func:`run_forever`) fetches what is owed, a
bounded batch per project in turn, and records each failure on its task with a retry time
that backs off from seconds to a day. What is owed lives in the database, so nothing is
forgotten across restarts.

Invariants: ``written`` lists exactly the keys storage holds for the task (each write is
recorded after it); a task's files leave storage before its row does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from sync import metrics
from sync.errors import Unavailable
from sync.exporters import get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.exporters.classes import image_object_value
from sync.exporters.files import export_root, file_stem, image_url
from sync.exports import project_config
from sync.media_sources import Media, MediaError, NotModified, source_for, sources, split_s3
from sync.models import MediaFile
from sync.payloads import storable
from sync.runtime import Runtime
from sync.storage import StorageError

log = logging.getLogger("annosync.media")

BATCH = 32  # fetches per turn of a project
# Fetches at once within a batch (they wait on the network). bench/media.py, 400 images at
# 40 ms a request: 1 at once 22 images/s, 4 at once 72/s, 8 at once 106/s.
FETCHERS = 8
BACKOFF_S = (5, 30, 120, 600, 3600, 6 * 3600, 86400)  # then daily
POLL_S = 1.0  # how soon an owed image is fetched (one indexed query per poll)
# A worker holds a project's media while it settles one batch (at most BATCH fetches of
# ANNOSYNC_MEDIA_TIMEOUT_S / FETCHERS rounds); the lock lapses if the worker dies.
LOCK_TTL_S = 900


def media_formats(settings, config: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(format folder, media folder)`` of the kept-fresh formats that name image files and
    fit the project's label config; [] with media off."""
    if not settings.media:
        return []
    found = []
    for name in settings.export_formats:
        exporter = get_exporter(name)
        if exporter.media_folder and unfit_reason(exporter, config) is None:
            found.append((exporter.folder, exporter.media_folder))
    return found


def wanted(project_id: int, doc: dict[str, Any], config, folders) -> tuple[str, list[str]]:
    """The task's media URL and the keys it should be stored at (named as its label files
    name it)."""
    url = image_url(doc, image_object_value(config))
    stem, ext = file_stem(doc["id"], url)
    keys = [f"{export_root(project_id, folder)}{media}/{stem}{ext}" for folder, media in folders]
    return url, keys


def note_tasks(
    rt: Runtime,
    session: Session,
    project_id: int,
    docs: Iterable[dict[str, Any]],
    deleted: Iterable[int],
) -> bool:
    """Record what changed tasks' media should be, and that deleted tasks' media go.
    Returns whether anything is owed now (the caller then asks for a media job)."""
    config = project_config(session, project_id)
    folders = media_formats(rt.settings, config)
    # Media off, or no format of this project names images: the drain's batches cost no
    # query for them (media copied earlier stay until their tasks go).
    docs, deleted = (list(docs) if folders else []), list(deleted)
    ids = [d["id"] for d in docs] + deleted
    if not ids:
        return False
    settled = _settled(session, ids)
    wants = {doc["id"]: wanted(project_id, doc, config, folders) for doc in docs}
    # Only the rows that change are loaded as objects (a rebuild changes few of 100k).
    changing = [i for i, want in wants.items() if settled.get(i) != want or not all(want)]
    rows = {
        row.task_id: row
        for row in session.scalars(
            select(MediaFile).where(MediaFile.task_id.in_([*changing, *deleted]))
        )
    }
    owed = False
    for task_id in changing:
        url, keys = wants[task_id]
        row = rows.get(task_id)
        if not url or not keys:
            owed |= _forget(session, row)
            continue
        if row is None:
            row = MediaFile(task_id=task_id, project_id=project_id, written="[]", attempts=0)
            session.add(row)
        # A changing row is new, gone, or wants another URL or keys: owed again.
        if row.url != url:
            row.etag = row.md5 = None
        row.url, row.keys = url, orjson.dumps(keys).decode()
        row.status, row.due_at, row.attempts, row.error = "owed", 0.0, 0, None
        owed = True
    for task_id in deleted:
        owed |= _forget(session, rows.get(task_id))
    return owed


def _settled(session: Session, ids: list[int]) -> dict[int, tuple[str, list[str]]]:
    """``task id -> (url, keys)`` of the rows not gone: a task that still wants exactly
    these needs nothing done to its row."""
    found = session.execute(
        select(MediaFile.task_id, MediaFile.url, MediaFile.keys).where(
            MediaFile.task_id.in_(ids), MediaFile.status != "gone"
        )
    )
    return {task_id: (url, orjson.loads(keys or "[]")) for task_id, url, keys in found}


def _forget(session: Session, row: MediaFile | None) -> bool:
    if row is None:
        return False
    if orjson.loads(row.written or "[]"):
        row.status, row.keys, row.due_at = "gone", "[]", 0.0
        return True
    session.delete(row)
    return False


def _lock(project_id: int) -> str:
    return f"annosync:media-lock:{project_id}"


def run_forever(rt: Runtime, stop) -> None:
    """A worker's media thread: settle what is due every ``POLL_S`` until ``stop`` is set.
    A thread beside the RQ worker, not RQ jobs: a fetch waiting on a slow host (or on a
    name that does not resolve) then never holds up a drain, whatever the worker count."""
    while not stop.wait(POLL_S):
        try:
            run_due(rt)
        except (Unavailable, StorageError, RedisError) as exc:
            log.warning("media sync failed, will retry: %s", exc)
        except Exception:
            log.exception("media sync failed")


def run_due(rt: Runtime) -> int:
    """Settle every project's due media, a batch per project in turn (one project with 100k
    images does not starve the others); a project another worker is on is skipped. Returns
    how many tasks' media were settled."""
    settled, pending = 0, None
    while pending is None or pending:
        with rt.sessions() as session:
            due = projects_due(session) if pending is None else pending
        pending = []
        for project_id in due:
            if not rt.worker_redis.set(_lock(project_id), b"1", nx=True, ex=LOCK_TTL_S):
                continue
            try:
                done, more = sync_batch(rt, project_id)
            finally:
                rt.worker_redis.delete(_lock(project_id))
            settled += done
            if more:
                pending.append(project_id)
    return settled


def sync_batch(rt: Runtime, project_id: int, batch: int = BATCH) -> tuple[int, bool]:
    """Settle up to ``batch`` due media of the project; ``(settled, more are due)``."""
    now = time.time()
    with rt.sessions() as session:
        rows = list(
            session.scalars(
                select(MediaFile)
                .where(
                    MediaFile.project_id == project_id,
                    MediaFile.status.in_(("owed", "gone")),
                    MediaFile.due_at <= now,
                )
                .order_by(MediaFile.due_at, MediaFile.task_id)
                .limit(batch + 1)
            )
        )
        more, rows = len(rows) > batch, rows[:batch]
        gone = [row for row in rows if row.status == "gone"]
        for row in gone:
            _remove(rt.storage, row, orjson.loads(row.written))
            session.delete(row)
        owed = [row for row in rows if row.status == "owed"]
        found = sources(rt.settings)
        with ThreadPoolExecutor(FETCHERS) as pool:
            results = list(pool.map(lambda row: _fetch(rt.storage, found, row), owed))
        settled, outcomes = len(gone), Counter()
        for row, result in zip(owed, results, strict=True):
            done = _settle(rt, row, result, now)
            settled += done
            outcomes[_outcome(result) if done else "failed"] += 1
        session.commit()
    metrics.count(rt, "media-fetches", outcomes)
    return settled, more


@dataclass(frozen=True)
class Copied:
    """The media was copied server-side to the row's first key (an ``s3://`` source read
    with the storage's own credentials): no bytes came through annosync."""

    etag: str | None


def _fetch(storage, found, row: MediaFile) -> Media | Copied | NotModified | MediaError:
    try:
        source = source_for(found, row.url)
        if source.name == "s3" and row.etag is None:
            etag = storage.copy_in(orjson.loads(row.keys)[0], *split_s3(row.url))
            if etag is not None:
                return Copied(etag)
        return source.fetch(row.url, row.etag)
    except (MediaError, NotModified) as exc:
        return exc
    except StorageError as exc:
        return MediaError(f"server-side copy: {exc}")


def _outcome(result) -> str:
    """The metric label of a settled fetch."""
    return {Media: "fetched", Copied: "copied"}.get(type(result), "not_modified")


def _settle(rt: Runtime, row: MediaFile, result, now: float) -> int:
    """Store a fetched file at the row's keys (or record why not); 1 if settled."""
    keys, written = orjson.loads(row.keys), orjson.loads(row.written)
    if isinstance(result, NotModified) and set(keys) == set(written):
        row.status, row.error, row.due_at = "done", None, 0.0
        return 1
    if isinstance(result, NotModified):  # the keys moved: fetch the bytes again
        row.etag = None
        result = MediaError("moved; fetching again")
    try:
        if isinstance(result, MediaError):
            raise result
        if isinstance(result, Media):
            kind = result.content_type or "application/octet-stream"
            rt.storage.put(keys[0], result.data, content_type=kind)
        rt.storage.copy_many([(key, keys[0]) for key in keys[1:]], replace=True)
        _remove(rt.storage, row, [key for key in written if key not in keys])
    except (MediaError, StorageError) as exc:
        row.attempts += 1
        row.error = storable(str(exc))
        row.due_at = now + BACKOFF_S[min(row.attempts, len(BACKOFF_S)) - 1]
        log.warning("media of task %s not copied: %s", row.task_id, row.error)
        return 0
    row.written, row.status, row.error, row.attempts = row.keys, "done", None, 0
    if isinstance(result, Copied):  # a single-part object's ETag is its MD5
        md5 = (result.etag or "").strip('"')
        row.etag, row.md5, row.size = result.etag, md5 if len(md5) == 32 else None, None
    else:
        row.etag, row.md5, row.size = result.etag, _md5(result.data), len(result.data)
    row.due_at = 0.0
    return 1


def _remove(storage, row: MediaFile, keys: list[str]) -> None:
    for key in keys:
        storage.delete(key)
    row.written = orjson.dumps([k for k in orjson.loads(row.written) if k not in keys]).decode()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def projects_due(session: Session, now: float | None = None) -> list[int]:
    """Projects with media owed or to remove whose time has come."""
    now = time.time() if now is None else now
    return list(
        session.scalars(
            select(MediaFile.project_id)
            .where(MediaFile.status.in_(("owed", "gone")), MediaFile.due_at <= now)
            .distinct()
        )
    )


def written_keys(session: Session, project_id: int) -> set[str]:
    """Every key storage holds media at for the project (never an orphan to a resync)."""
    found: set[str] = set()
    for written in session.scalars(
        select(MediaFile.written).where(MediaFile.project_id == project_id)
    ):
        found.update(orjson.loads(written))
    return found


def recheck(session: Session, project_id: int, listed: dict[str, str | None]) -> int:
    """For a resync (``listed``: key -> md5 of what storage holds): media that storage lost
    or holds other bytes of are owed again in full; those with an ETag are asked again with
    it (copied only if the source changed them). Returns how many were missing or damaged."""
    damaged = 0
    for row in session.scalars(
        select(MediaFile).where(MediaFile.project_id == project_id, MediaFile.status == "done")
    ):
        written = orjson.loads(row.written)
        if any(key not in listed or listed[key] not in (None, row.md5) for key in written):
            row.etag, damaged = None, damaged + 1  # fetched in full, every key rewritten
        elif not row.etag:
            continue  # no way to ask cheaply whether it changed: kept until its URL does
        row.status, row.due_at = "owed", 0.0
    return damaged
