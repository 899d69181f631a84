"""What a CI job does with a pinned generation: materialise it in a folder, every byte
verified, or compare two generations. Both read the bucket alone (no database, no Redis), so
a job needs only the storage URL and its credentials.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync import generations
from sync.errors import InvalidInput
from sync.exporters.files import split_of
from sync.storage.base import check_key

MANIFEST_NAME = "generation.json"


class GenerationNotFound(InvalidInput):
    """No such generation: never captured, or removed by retention (``expired``)."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def read_index(storage, project_id: int) -> list[dict[str, Any]]:
    """The retained generations as the bucket lists them (no database needed)."""
    raw = storage.get(generations.index_key(project_id))
    if raw is None:
        raise GenerationNotFound(f"project {project_id} has no generations in this bucket")
    return orjson.loads(raw)


def find(entries: list[dict[str, Any]], project_id: int, wanted: int | None) -> dict[str, Any]:
    """The index entry of generation ``wanted`` (None: the latest)."""
    if not entries:
        raise GenerationNotFound(f"project {project_id} has no generations yet")
    if wanted is None:
        return entries[-1]
    for entry in entries:
        if entry["generation"] == wanted:
            return entry
    kept = f"{entries[0]['generation']}-{entries[-1]['generation']}"
    if wanted < entries[-1]["generation"]:
        raise GenerationNotFound(
            f"generation {wanted} of project {project_id} has expired (kept: {kept})",
            expired=True,
        )
    raise GenerationNotFound(f"project {project_id} has no generation {wanted} (kept: {kept})")


def read_object(storage, project_id: int, entry: dict[str, Any]) -> bytes:
    """The bytes of one manifest entry, checked against its sha256."""
    data = storage.get(generations.object_key(project_id, entry["sha256"]))
    if data is None:
        raise generations.GenerationCorrupt(
            f"{entry['path']}: its object is missing from the bucket"
        )
    if generations.sha256(data) != entry["sha256"]:
        raise generations.GenerationCorrupt(f"{entry['path']}: sha256 mismatch in the bucket")
    return data


def select_format(manifest: dict[str, Any], fmt: str | None) -> Iterable[dict[str, Any]]:
    """The manifest's files of format ``fmt`` (None: all)."""
    if fmt is None:
        return manifest["files"]
    fmt = generations.TASKS if fmt.lower() == generations.TASKS else fmt.upper()
    if fmt != generations.TASKS and fmt not in manifest["formats"]:
        raise InvalidInput(
            f"generation {manifest['generation']} has no {fmt} export "
            f"(formats: {', '.join(manifest['formats']) or 'none'})"
        )
    return [f for f in manifest["files"] if f["format"] == fmt]


@dataclass
class Pulled:
    generation: int
    files: int
    bytes: int
    manifest_sha256: str


def pull(storage, project_id: int, wanted: int | None, fmt: str | None, to: Path) -> Pulled:
    """Write generation ``wanted`` (None: the latest) of ``project_id`` into the folder ``to``
    (bucket layout, plus ``generation.json``: the manifest). ``to`` must not exist or be
    empty. The files are written to a sibling folder that is renamed into place only once
    every sha256 matched: ``to`` holds the whole generation or nothing."""
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise InvalidInput(f"{to} exists and is not an empty folder")
    listed = find(read_index(storage, project_id), project_id, wanted)
    number = listed["generation"]
    manifest = generations.read_manifest(storage, project_id, number, listed["sha256"])
    entries = list(select_format(manifest, fmt))
    to.parent.mkdir(parents=True, exist_ok=True)
    partial = to.parent / f".{to.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        total = 0
        for entry in entries:
            data = read_object(storage, project_id, entry)
            target = partial / check_key(entry["path"])  # confined: no absolute path, no ..
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            total += len(data)
        (partial / MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if to.exists():
            to.rmdir()
        partial.rename(to)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Pulled(number, len(entries), total, listed["sha256"])


@dataclass
class Diff:
    """Tasks added, changed and deleted between two generations, by split; export files
    that changed; and the task files' digests before and after, for those tasks."""

    before: int | None
    after: int
    tasks: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=lambda: {"added": 0, "changed": 0, "deleted": 0})
    task_files: dict[int, tuple[dict | None, dict | None]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"from": self.before, "to": self.after, "tasks": self.tasks, "files": self.files}


def diff(storage, project_id: int, before: int | None, after: int) -> Diff:
    """What changed from generation ``before`` (None: from nothing) to ``after``; both must
    be retained."""
    entries = read_index(storage, project_id)
    new = _files(storage, project_id, find(entries, project_id, after))
    old = (
        ({}, None)
        if before is None
        else _files(storage, project_id, find(entries, project_id, before))
    )
    split = tuple((name, float(share)) for name, share in new[1]["split"])
    result = Diff(before, after)
    for path in sorted(old[0].keys() | new[0].keys()):
        was, now = old[0].get(path), new[0].get(path)
        if (was and was["sha256"]) == (now and now["sha256"]):
            continue
        change = "added" if was is None else "deleted" if now is None else "changed"
        task_id = _task_id(path)
        if task_id is None:
            result.files[change] += 1
            continue
        by_split = result.tasks.setdefault(split_of(task_id, split), _empty())
        by_split[change].append(task_id)
        result.task_files[task_id] = (was, now)
    return result


def annotation_changes(
    storage, project_id: int, result: Diff, ids: dict[str, list[int]], limit: int = 2000
) -> dict[str, int] | None:
    """Annotations added, changed and deleted within the tasks ``ids`` (by change, as in
    ``result``), read from the generations' task files; None beyond ``limit`` tasks (the
    files would be read one by one)."""
    tasks = [task_id for change in ids.values() for task_id in change]
    if len(tasks) > limit:
        return None
    counts = {"added": 0, "changed": 0, "deleted": 0}
    for task_id in tasks:
        was, now = result.task_files[task_id]
        old, new = (_annotations(storage, project_id, entry) for entry in (was, now))
        counts["added"] += len(new.keys() - old.keys())
        counts["deleted"] += len(old.keys() - new.keys())
        counts["changed"] += sum(1 for a in new.keys() & old.keys() if new[a] != old[a])
    return counts


def _annotations(storage, project_id: int, entry: dict | None) -> dict[Any, bytes]:
    if entry is None:
        return {}
    task = orjson.loads(read_object(storage, project_id, entry))
    return {a.get("id"): orjson.dumps(a) for a in task.get("annotations", [])}


def _empty() -> dict[str, list[int]]:
    return {"added": [], "changed": [], "deleted": []}


def _files(storage, project_id: int, listed: dict[str, Any]) -> tuple[dict[str, dict], dict]:
    manifest = generations.read_manifest(
        storage, project_id, listed["generation"], listed["sha256"]
    )
    return {f["path"]: f for f in manifest["files"]}, manifest


def _task_id(path: str) -> int | None:
    """The task id of a task file's path (``tasks/<id>.json``), else None."""
    folder, _, name = path.partition("/")
    if folder != "tasks" or not name.endswith(".json"):
        return None
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() else None


def write_zip(storage, project_id: int, wanted: int | None, fmt: str | None, out) -> int:
    """Write generation ``wanted`` (None: the latest) as a zip into the binary file ``out``,
    every object checked first; the same generation always gives the same bytes (fixed
    timestamps, manifest order). Returns the generation's number."""
    listed = find(read_index(storage, project_id), project_id, wanted)
    manifest = generations.read_manifest(
        storage, project_id, listed["generation"], listed["sha256"]
    )
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for entry in select_format(manifest, fmt):
            data = read_object(storage, project_id, entry)
            archive.writestr(zip_entry(check_key(entry["path"])), data)
        archive.writestr(
            zip_entry(MANIFEST_NAME), orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        )
    return listed["generation"]


def zip_entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed timestamp and mode: the same files always zip to the same
    bytes, so two downloads of one export compare equal."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info
