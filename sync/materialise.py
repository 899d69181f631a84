"""What a CI job does with a pinned generation: materialise it in a folder, every byte
verified, or compare two generations. Both read the bucket alone (no database, no Redis), so
a job needs only the storage URL and its credentials.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync import generations
from sync.errors import InvalidInput
from sync.exporters.files import split_of
from sync.storage.base import check_key

MANIFEST_NAME = "generation.json"


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
    listed = generations.find(generations.read_index(storage, project_id), project_id, wanted)
    number = listed["generation"]
    manifest = generations.read_manifest(storage, project_id, number, listed["sha256"])
    entries = list(generations.select_format(manifest, fmt))
    to.parent.mkdir(parents=True, exist_ok=True)
    partial = to.parent / f".{to.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        total = 0
        for entry in entries:
            data = generations.read_object(storage, project_id, entry)
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
    that changed."""

    before: int
    after: int
    tasks: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=lambda: {"added": 0, "changed": 0, "deleted": 0})

    def as_json(self) -> dict[str, Any]:
        return {"from": self.before, "to": self.after, "tasks": self.tasks, "files": self.files}


def diff(storage, project_id: int, before: int, after: int) -> Diff:
    """What changed from generation ``before`` to ``after`` (both retained)."""
    entries = generations.read_index(storage, project_id)
    old, new = (
        _files(storage, project_id, generations.find(entries, project_id, number))
        for number in (before, after)
    )
    split = tuple((name, float(share)) for name, share in new[1]["split"])
    result = Diff(before, after)
    for path in sorted(old[0].keys() | new[0].keys()):
        was, now = old[0].get(path), new[0].get(path)
        if was == now:
            continue
        change = "added" if was is None else "deleted" if now is None else "changed"
        task_id = _task_id(path)
        if task_id is None:
            result.files[change] += 1
            continue
        by_split = result.tasks.setdefault(split_of(task_id, split), _empty())
        by_split[change].append(task_id)
    return result


def _empty() -> dict[str, list[int]]:
    return {"added": [], "changed": [], "deleted": []}


def _files(storage, project_id: int, listed: dict[str, Any]) -> tuple[dict[str, str], dict]:
    manifest = generations.read_manifest(
        storage, project_id, listed["generation"], listed["sha256"]
    )
    return {f["path"]: f["sha256"] for f in manifest["files"]}, manifest


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
    listed = generations.find(generations.read_index(storage, project_id), project_id, wanted)
    manifest = generations.read_manifest(
        storage, project_id, listed["generation"], listed["sha256"]
    )
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for entry in generations.select_format(manifest, fmt):
            data = generations.read_object(storage, project_id, entry)
            archive.writestr(_zip_info(check_key(entry["path"])), data)
        archive.writestr(
            _zip_info(MANIFEST_NAME), orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        )
    return listed["generation"]


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info
