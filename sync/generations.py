"""Pinned dataset generations: immutable, verifiable snapshots of a project's bucket.

Each time a project's kept-fresh exports change, its generation number goes up and the
generation is *captured*: every file of the project (task files, per-task export files,
aggregates, ``_state.json``) is named with its sha256 and size in a manifest, and the bytes
are kept content-addressed, so a generation costs only the files that changed since the
ones before it (plus the aggregates, which are whole files, and the manifest)::

    generations/<project>/objects/<sha256>            bytes of a file, once per content
    generations/<project>/<N>.json                      manifest of generation N
    generations/<project>/index.json                    retained generations, oldest first

Invariants: a manifest is written only after every object it names is in storage; the index
names a manifest by its sha256, and a manifest every object by its sha256, so a reader that
checks each digest gets exactly what was captured or an error. Capture runs under the
project's drain lock, so no task file changes while it copies; objects are removed only
there too, and only when no retained manifest names them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sync.documents import task_key
from sync.errors import AnnosyncError
from sync.models import (
    Annotation,
    ExportFragment,
    Generation,
    GenerationObject,
    Project,
    Task,
)

log = logging.getLogger("annosync.generations")
TASKS = "tasks"  # the "format" of task files in a manifest
STATE = "_state"  # ... and of exports/<project>/_state.json
COPY_BATCH = 256
# Objects no kept generation names are removed at every GARBAGE_EVERY-th generation: finding
# them reads every kept manifest, which would otherwise double the cost of each capture.
GARBAGE_EVERY = 10


class GenerationError(AnnosyncError):
    """A generation cannot be captured or read as it should (storage disagrees)."""


class GenerationCorrupt(GenerationError):
    """Stored bytes do not match the digest that names them, or are missing."""


def root(project_id: int) -> str:
    return f"generations/{int(project_id)}/"


def object_key(project_id: int, sha256: str) -> str:
    # One flat folder: a drain's batch then fsyncs one folder, not one per object (ext4
    # and S3 keep many names in one folder or prefix well).
    return f"{root(project_id)}objects/{sha256}"


def manifest_key(project_id: int, number: int) -> str:
    return f"{root(project_id)}{int(number)}.json"


def index_key(project_id: int) -> str:
    return root(project_id) + "index.json"


@dataclass(frozen=True)
class Entry:
    """One file of a generation: where it lives in the bucket, what it holds, whose it is."""

    path: str
    sha256: str
    size: int
    format: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- capture ---------------------------------------------------------------------------


@dataclass
class Captured:
    """A captured generation whose database rows are staged in the caller's session; call
    :meth:`publish` once that session has committed."""

    project_id: int
    listing: list[dict[str, Any]]
    expired: list[int]
    garbage: list[str]

    def publish(self, storage) -> None:
        """Announce the generation in ``index.json``, then remove what retention dropped.
        Only after the commit: an index never names a generation the database may lose, and
        nothing is removed that a generation still in the database names."""
        storage.put(index_key(self.project_id), orjson.dumps(self.listing))
        for number in self.expired:
            storage.delete(manifest_key(self.project_id, number))
        for digest in self.garbage:
            storage.delete(object_key(self.project_id, digest))


def capture(
    rt, session: Session, project: Project, formats: list[str], aggregates: dict[str, tuple]
) -> Captured | None:
    """Capture generation ``project.export_generation``; ``aggregates`` maps each aggregate
    file's key to ``(format, bytes)`` as just written. The caller holds the project's drain
    lock, commits, then calls :meth:`Captured.publish`. Storage is written before any
    database write, so SQLite's write lock is never held over storage. None when
    generations are turned off."""
    if rt.settings.generations_keep == 0:
        return None
    digests = _live_digests(session, project.id, formats)
    for key, (fmt, data) in aggregates.items():
        digests[key] = (fmt, sha256(data))
    sizes, new_objects = _store_objects(rt.storage, session, project.id, digests, aggregates)
    entries = sorted(
        (Entry(key, sha, sizes[sha], fmt) for key, (fmt, sha) in digests.items()),
        key=lambda e: e.path,
    )
    now = datetime.now(UTC)
    manifest = _manifest(session, project, formats, entries, now, rt.settings.split)
    raw = orjson.dumps(manifest)
    rt.storage.put(manifest_key(project.id, project.export_generation), raw)
    row = Generation(
        project_id=project.id,
        number=project.export_generation,
        created_at=now,
        manifest_sha256=sha256(raw),
        tasks=manifest["counts"]["tasks"],
        annotations=manifest["counts"]["annotations"],
        files=len(entries),
        bytes=manifest["counts"]["bytes"],
    )
    kept, expired = _retention(rt.settings, session, project.id, row, now)
    collect = row.number % GARBAGE_EVERY == 0  # reads every kept manifest: not every time
    garbage = _garbage(rt.storage, project.id, kept, manifest, sizes) if collect else []
    # The database writes, last.
    record_objects(session, new_objects)
    session.merge(row)  # a capture that failed before its commit may have left the number
    if expired:
        session.execute(
            update(Generation)
            .where(Generation.project_id == project.id, Generation.number.in_(expired))
            .values(expired_at=now)
            .execution_options(synchronize_session=False)
        )
    for start in range(0, len(garbage), 500):
        session.execute(
            GenerationObject.__table__.delete().where(
                GenerationObject.project_id == project.id,
                GenerationObject.sha256.in_(garbage[start : start + 500]),
            )
        )
    return Captured(project.id, [_listing(g) for g in kept], expired, garbage)


def _live_digests(session: Session, project_id: int, formats) -> dict[str, tuple[str, str]]:
    """``{key: (format, sha256)}`` of the task files and per-task export files (of
    ``formats``; None: all) that storage holds now, as the store recorded them."""
    digests: dict[str, tuple[str, str]] = {}
    tasks = session.execute(
        select(Task.id, Task.file_sha256).where(
            Task.project_id == project_id, Task.deleted.is_(False), Task.file_sha256.is_not(None)
        )
    )
    for task_id, digest in tasks:
        digests[task_key(task_id)] = (TASKS, digest)
    query = select(ExportFragment.format, ExportFragment.files).where(
        ExportFragment.project_id == project_id
    )
    if formats is not None:
        query = query.where(ExportFragment.format.in_(formats))
    fragments = session.execute(query)
    for fmt, files in fragments:
        for key, digest in orjson.loads(files).items():
            digests[key] = (fmt, digest)
    return digests


def recorded_keys(session: Session, project_id: int) -> set[str]:
    """The keys of every task file and per-task export file the store says storage holds."""
    return set(_live_digests(session, project_id, None))


def objects_to_write(
    session: Session, settings, project_id: int | None, items: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The objects that files being written (``items``) add to the project's object store,
    as ``(object key, file key)`` for :meth:`StorageBackend.copy_many` once the files are
    written, and the rows that record them once storage holds them. So a capture finds every
    per-task file's bytes already stored and copies nothing. Callers hold the project's
    drain lock, as capture and garbage collection do."""
    if project_id is None or settings.generations_keep == 0 or not items:
        return [], []
    final = dict(items)  # a key written twice holds its last bytes: copy from those only
    fresh: dict[str, tuple[str, int]] = {}
    for key, data in final.items():
        fresh.setdefault(sha256(data), (key, len(data)))
    with session.no_autoflush:  # a read: pending changes must not take the write lock yet
        known = list(
            session.scalars(
                select(GenerationObject.sha256).where(
                    GenerationObject.project_id == project_id,
                    GenerationObject.sha256.in_(list(fresh)),
                )
            )
        )
    for digest in known:
        del fresh[digest]
    copies = [(object_key(project_id, digest), key) for digest, (key, _n) in fresh.items()]
    rows = [
        {"project_id": project_id, "sha256": digest, "size": size}
        for digest, (_key, size) in fresh.items()
    ]
    return copies, rows


def record_objects(session: Session, rows: list[dict[str, Any]]) -> None:
    """Record objects that storage now holds (see :func:`objects_to_write`)."""
    if rows:
        session.execute(GenerationObject.__table__.insert(), rows)


def _store_objects(storage, session: Session, project_id: int, digests, aggregates):
    """Store every content not in the object store yet: the aggregates (copies of the files
    just written) and per-task files written before generations existed (read back and
    checked). Returns ``{sha256: size}`` of all and the rows of the new objects, for
    :func:`record_objects`."""
    known = session.execute(
        select(GenerationObject.sha256, GenerationObject.size).where(
            GenerationObject.project_id == project_id
        )
    )
    sizes = {digest: size for digest, size in known}
    missing: dict[str, str] = {}  # sha -> a key that holds it
    for key, (_fmt, digest) in digests.items():
        if digest not in sizes:
            missing.setdefault(digest, key)
    rows = []
    copies = [(object_key(project_id, d), key) for d, key in missing.items() if key in aggregates]
    storage.copy_many(copies)
    for digest, key in missing.items():
        if key in aggregates:
            rows.append(
                {"project_id": project_id, "sha256": digest, "size": len(aggregates[key][1])}
            )
    older = [(d, key) for d, key in missing.items() if key not in aggregates]
    for start in range(0, len(older), COPY_BATCH):
        batch = older[start : start + COPY_BATCH]
        writes = [(object_key(project_id, d), _bytes_of(storage, key, d)) for d, key in batch]
        storage.put_many(writes)
        rows += [
            {"project_id": project_id, "sha256": digest, "size": len(data)}
            for (digest, _key), (_okey, data) in zip(batch, writes, strict=True)
        ]
    sizes.update((row["sha256"], row["size"]) for row in rows)
    return sizes, rows


def _bytes_of(storage, key: str, digest: str) -> bytes:
    data = storage.get(key)
    if data is None or sha256(data) != digest:
        # Storage ahead of the store: a worker was killed between its write and its commit.
        # The task is still dirty, so its next drain rewrites it and the capture is retried.
        raise GenerationError(f"{key} in storage is not what the store recorded; retry later")
    return data


def _manifest(session, project: Project, formats, entries: list[Entry], now, split) -> dict:
    annotations = session.scalar(
        select(func.count()).where(
            Annotation.project_id == project.id, Annotation.deleted.is_(False)
        )
    )
    return {
        "project": project.id,
        "generation": project.export_generation,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "label_config_sha256": project.config_digest,
        "formats": list(formats),
        "split": [[name, share] for name, share in split],
        "counts": {
            "tasks": sum(1 for e in entries if e.format == TASKS),
            "annotations": annotations or 0,
            "files": len(entries),
            "bytes": sum(e.size for e in entries),
        },
        "files": [
            {"path": e.path, "sha256": e.sha256, "size": e.size, "format": e.format}
            for e in entries
        ],
    }


# -- retention -------------------------------------------------------------------------


def _retention(settings, session: Session, project_id: int, new: Generation, now: datetime):
    """``(kept, expired numbers)`` once ``new`` is added: the newest
    ``ANNOSYNC_GENERATIONS_KEEP`` stay, and so does every generation younger than
    ``ANNOSYNC_GENERATIONS_KEEP_HOURS``, and every one a trigger announced within
    ``ANNOSYNC_GENERATIONS_ANNOUNCED_KEEP_HOURS`` (a CI job told about it may pull it
    later). ``kept`` is oldest first."""
    live = [
        g
        for g in session.scalars(
            select(Generation)
            .where(Generation.project_id == project_id, Generation.expired_at.is_(None))
            .order_by(Generation.number.desc())
        )
        if g.number != new.number
    ]
    young = now - timedelta(hours=settings.generations_keep_hours)
    announced = now - timedelta(hours=settings.generations_announced_keep_hours)
    newest_first = [new, *live]
    kept = [
        g
        for i, g in enumerate(newest_first)
        if i < settings.generations_keep
        or _aware(g.created_at) >= young
        or (g.announced_at is not None and _aware(g.announced_at) >= announced)
    ]
    expired = [g.number for g in newest_first if g not in kept]
    return kept[::-1], expired


def _aware(moment: datetime) -> datetime:
    """SQLite gives timestamps back without their zone (they were stored in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _garbage(storage, project_id: int, kept, manifest, sizes) -> list[str]:
    """The objects that no kept generation names (``manifest``: the new one, not yet
    readable from storage by its digest)."""
    named = {f["sha256"] for f in manifest["files"]}
    for g in kept:
        if g.number != manifest["generation"]:
            found = read_manifest(storage, project_id, g.number, g.manifest_sha256)
            named.update(f["sha256"] for f in found["files"])
    return [digest for digest in sizes if digest not in named]


# -- reading ---------------------------------------------------------------------------


def _listing(row: Generation) -> dict[str, Any]:
    return {
        "generation": row.number,
        "created_at": _aware(row.created_at).isoformat().replace("+00:00", "Z"),
        "sha256": row.manifest_sha256,
        "counts": {
            "tasks": row.tasks,
            "annotations": row.annotations,
            "files": row.files,
            "bytes": row.bytes,
        },
    }


def index(session: Session, project_id: int) -> list[dict[str, Any]]:
    """The retained generations of a project, oldest first (what ``index.json`` holds)."""
    rows = session.scalars(
        select(Generation)
        .where(Generation.project_id == project_id, Generation.expired_at.is_(None))
        .order_by(Generation.number)
    )
    return [_listing(row) for row in rows]


def read_manifest(storage, project_id: int, number: int, expected: str) -> dict[str, Any]:
    """Generation ``number``'s manifest, checked against the digest that names it."""
    raw = storage.get(manifest_key(project_id, number))
    if raw is None:
        raise GenerationCorrupt(f"the manifest of generation {number} is missing")
    if sha256(raw) != expected:
        raise GenerationCorrupt(f"the manifest of generation {number} does not match its sha256")
    return orjson.loads(raw)
