"""Export snapshots shaped like Label Studio's (``/api/projects/<id>/exports``), made from a
pinned generation, streamed and bounded in memory however big the project.

A snapshot pins the project's newest generation when it is created; a job then reads that
generation's task files one at a time (every sha256 checked), applies Label Studio's task
and annotation filters and serialization options, and writes the JSON export to a spooled
file that is uploaded to ``snapshots/<project>/<id>.json`` without being held in memory.
Label Studio builds the whole export in memory (its issues report 18k- and 128k-task
projects failing); here the job holds the generation's manifest (about 1 KB per task) and one
task at a time (``bench/snapshot.py``: 100k tasks, 200 MB peak RSS).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import UTC, datetime
from typing import Any

import orjson
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import validation
from config.validation import Issue
from sync import generations, materialise
from sync.errors import InvalidInput
from sync.models import Generation, Snapshot
from sync.runtime import Runtime, current_runtime

log = logging.getLogger("annosync.snapshots")
SCHEMA = "snapshot"


class SnapshotRefused(InvalidInput):
    """A snapshot request annosync cannot honour; ``issues`` name the fields."""

    def __init__(self, message: str, issues: list[Issue]) -> None:
        super().__init__(message)
        self.issues = issues


def key(project_id: int, snapshot_id: int) -> str:
    return f"snapshots/{int(project_id)}/{int(snapshot_id)}.json"


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The request's options, checked; unsupported ones are refused by name."""
    issues = validation.validate(SCHEMA, body)
    if issues:
        raise SnapshotRefused("invalid snapshot request", issues)
    tasks = body.get("task_filter_options") or {}
    serial = body.get("serialization_options") or {}
    refused = []
    if tasks.get("view") is not None:
        refused.append(
            Issue("task_filter_options.view", "Data Manager views are not kept", "supported")
        )
    if serial.get("interpolate_key_frames"):
        refused.append(
            Issue("serialization_options.interpolate_key_frames", "not supported", "supported")
        )
    if refused:
        raise SnapshotRefused("unsupported snapshot options", refused)
    return {
        "task_filter_options": tasks,
        "annotation_filter_options": body.get("annotation_filter_options") or {},
        "serialization_options": serial,
    }


def create(rt: Runtime, project_id: int, body: dict[str, Any]) -> Snapshot:
    """Record a snapshot of the project's newest generation and queue the job making it."""
    options = _options(body)
    with rt.sessions() as session:
        latest = session.scalar(
            select(Generation.number)
            .where(Generation.project_id == project_id, Generation.expired_at.is_(None))
            .order_by(Generation.number.desc())
            .limit(1)
        )
        if latest is None:
            raise materialise.GenerationNotFound(f"project {project_id} has no generation yet")
        row = Snapshot(
            project_id=project_id,
            title=body.get("title") or f"snapshot of generation {latest}",
            status="created",
            generation=latest,
            options=orjson.dumps(options).decode(),
            created_at=datetime.now(UTC),
        )
        session.add(row)
        session.commit()
    Queue(rt.settings.queue_name, connection=rt.worker_redis).enqueue(
        snapshot_job, row.id, job_timeout=3600, result_ttl=60
    )
    return row


def snapshot_job(snapshot_id: int) -> str:
    """RQ job: make a snapshot."""
    return make(current_runtime(), snapshot_id)


def make(rt: Runtime, snapshot_id: int) -> str:
    with rt.sessions() as session:
        row = session.get(Snapshot, snapshot_id)
        if row is None or row.status not in {"created", "in_progress"}:
            return "nothing to do"
        row.status = "in_progress"
        session.commit()
        try:
            counters, md5 = _write(rt, row)
        except Exception as exc:
            row.status, row.error = "failed", str(exc)[:500]
            row.finished_at = datetime.now(UTC)
            session.commit()
            log.warning("snapshot %s failed: %s", snapshot_id, exc)
            raise
        row.status, row.counters, row.md5 = "completed", orjson.dumps(counters).decode(), md5
        row.finished_at = datetime.now(UTC)
        session.commit()
        return row.status


def _write(rt: Runtime, row: Snapshot) -> tuple[dict[str, int], str]:
    """Write the snapshot's JSON export to storage; its counters and md5."""
    storage = rt.storage
    listed = materialise.find(materialise.read_index(storage, row.project_id), row.project_id,
                              row.generation)  # fmt: skip
    manifest = generations.read_manifest(storage, row.project_id, row.generation, listed["sha256"])
    entries = sorted(
        (e for e in manifest["files"] if e["format"] == generations.TASKS),
        key=lambda e: int(e["path"].removeprefix("tasks/").removesuffix(".json")),
    )
    options = orjson.loads(row.options)
    counters = {"task_number": 0, "annotation_number": 0, "prediction_number": 0}
    md5 = hashlib.md5(usedforsecurity=False)
    with tempfile.TemporaryFile(prefix="annosync-snapshot-") as spool:
        first = True
        for entry in entries:
            task = _shaped(orjson.loads(materialise.read_object(storage, row.project_id, entry)),
                           options)  # fmt: skip
            if task is None:
                continue
            chunk = (b"[" if first else b",") + orjson.dumps(task)
            first = False
            spool.write(chunk)
            md5.update(chunk)
            counters["task_number"] += 1
            counters["annotation_number"] += len(task["annotations"])
            counters["prediction_number"] += len(task.get("predictions", []))
        tail = b"[]" if first else b"]"
        spool.write(tail)
        md5.update(tail)
        spool.seek(0)
        storage.put_file(key(row.project_id, row.id), spool)
    return counters, md5.hexdigest()


def _shaped(task: dict[str, Any], options: dict[str, Any]) -> dict[str, Any] | None:
    """The task as Label Studio's export with these options writes it; None: filtered out."""
    annotations = task.get("annotations", [])
    cancelled = any(a.get("was_cancelled") for a in annotations)
    usable = any(not a.get("was_cancelled") for a in annotations)
    tasks = options["task_filter_options"]
    if tasks.get("only_with_annotations") and not annotations:
        return None
    for name, holds in (("skipped", cancelled), ("annotated", bool(annotations)),
                        ("finished", usable)):  # fmt: skip
        if (tasks.get(name) == "only" and not holds) or (tasks.get(name) == "exclude" and holds):
            return None
    task = dict(task, annotations=_kept(annotations, options["annotation_filter_options"]))
    serial = options["serialization_options"]
    for field_name in ("drafts", "predictions"):
        if (serial.get(field_name) or {}).get("only_id"):
            task[field_name] = [item.get("id") for item in task.get(field_name, [])]
    if (serial.get("annotations__completed_by") or {}).get("only_id"):
        task["annotations"] = [
            dict(a, completed_by=_id_of(a.get("completed_by"))) for a in task["annotations"]
        ]
    return task


def _kept(annotations: list[dict], filters: dict[str, Any]) -> list[dict]:
    """Label Studio's annotation filters: an annotation stays when a kind it is of is on
    (usual: neither ground truth nor skipped); no filter given keeps all."""
    wanted = {name for name in ("usual", "ground_truth", "skipped") if filters.get(name)}
    if not wanted:
        return annotations
    kept = []
    for a in annotations:
        skipped, truth = bool(a.get("was_cancelled")), bool(a.get("ground_truth"))
        kinds = {"skipped"} if skipped else set()
        kinds |= {"ground_truth"} if truth else set()
        kinds |= {"usual"} if not (skipped or truth) else set()
        if kinds & wanted:
            kept.append(a)
    return kept


def _id_of(user: Any) -> Any:
    return user.get("id") if isinstance(user, dict) else user


def as_json(row: Snapshot) -> dict[str, Any]:
    """The snapshot as Label Studio's API describes an export."""
    return {
        "id": row.id,
        "title": row.title,
        "created_by": None,
        "created_at": _stamp(row.created_at),
        "finished_at": _stamp(row.finished_at),
        "status": row.status,
        "md5": row.md5,
        "counters": orjson.loads(row.counters) if row.counters else {},
        "converted_formats": [],
        "generation": row.generation,
    }


def _stamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def listing(session: Session, project_id: int) -> list[Snapshot]:
    query = select(Snapshot).where(Snapshot.project_id == project_id).order_by(Snapshot.id.desc())
    return list(session.scalars(query))


def remove(rt: Runtime, session: Session, row: Snapshot) -> None:
    rt.storage.delete(key(row.project_id, row.id))
    session.delete(row)
    session.commit()
