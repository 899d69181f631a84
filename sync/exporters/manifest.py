"""MANIFEST: ``manifest.jsonl``, one line per task (what is in the bucket, and its split)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import split_of


class ManifestExporter:
    """``{"task_id", "key", "sha256", "bytes", "updated_at", "annotations", "split"}`` lines
    in task-id order, for training jobs that want to know exactly what changed."""

    name = "MANIFEST"
    title = "Manifest of the task files (JSON lines)"
    objects = frozenset()
    folder = ""
    media_folder = None
    supports = frozenset()  # every config

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        line = {
            "task_id": task["id"],
            "key": f"tasks/{int(task['id'])}.json",
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "updated_at": _updated_at(task),
            "annotations": len(annotations),
            "split": split_of(task["id"], ctx.split),
        }
        return TaskExport({}, orjson.dumps(line))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"manifest.jsonl": b"".join(fragment + b"\n" for fragment in fragments)}


def _updated_at(task: dict[str, Any]) -> str | None:
    stamps = [task.get("updated_at")] + [a.get("updated_at") for a in task.get("annotations") or []]
    stamps = [s for s in stamps if isinstance(s, str)]
    return max(stamps) if stamps else None


register(ManifestExporter())
