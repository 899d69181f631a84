"""ASR_MANIFEST: NVIDIA NeMo manifest lines ``{"audio_filepath", "duration", "text"}``.

The duration comes from the task (``data.duration``) or from a result's
``original_length``; audio is never downloaded at export time. NeMo needs a duration, so
transcribed tasks without one go to ``manifest_missing_duration.json`` instead of a line NeMo
would reject.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import object_data
from sync.exporters.regions import chosen_annotation, strings


def audio_path(task: dict[str, Any], ctx: ExportContext) -> str | None:
    """The audio reference: the Audio object's data key, else ``audio``."""
    path = object_data(task, ctx, ("Audio", "AudioPlus"))
    fallback = (task.get("data") or {}).get("audio")
    return path if path is not None else fallback if isinstance(fallback, str) else None


def duration(task: dict[str, Any], results: list[dict[str, Any]]) -> float | None:
    """Seconds of audio, from the task data or the results; None when nobody said."""
    candidates = [(task.get("data") or {}).get("duration")]
    candidates += [r.get("original_length") for r in results]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


class AsrManifestExporter:
    """One line per transcribed task (the chosen annotation's TextArea text, joined)."""

    name = "ASR_MANIFEST"
    title = "ASR manifest (NVIDIA NeMo)"
    objects = frozenset({"Audio", "AudioPlus"})
    folder = "asr_manifest"
    media_folder = None
    supports = frozenset({"TextArea"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        results = (chosen_annotation(task) or {}).get("result") or []
        texts = [
            t
            for r in results
            if r.get("type") == "textarea" and isinstance(r.get("value"), dict)
            for t in strings(r["value"].get("text"))
        ]
        path = audio_path(task, ctx)
        if not texts or path is None:
            return TaskExport({}, b"")
        line: dict[str, Any] = {"audio_filepath": path}
        seconds = duration(task, results)
        if seconds is not None:
            line["duration"] = seconds
        line["text"] = " ".join(texts)
        return TaskExport({}, orjson.dumps(line))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        complete, missing = [], []
        for fragment in fragments:
            if fragment:
                has_duration = "duration" in orjson.loads(fragment)
                (complete if has_duration else missing).append(fragment + b"\n")
        return {
            "manifest.json": b"".join(complete),
            "manifest_missing_duration.json": b"".join(missing),
        }


register(AsrManifestExporter())
