"""JSON and JSON_MIN: the project as one JSON array, as Label Studio's export writes it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.records import META_KEYS, annotation_items, annotator, prettify


def _json_array(elements: Iterable[bytes]) -> bytes:
    """A JSON array with one element per line (streamable, diff-friendly)."""
    body = b",\n".join(e for e in elements if e)
    return b"[\n" + body + b"\n]\n" if body else b"[]\n"


class JsonExporter:
    """``result.json``: the full tasks, annotations and all (what annosync stores)."""

    name = "JSON"
    title = "JSON (full tasks)"
    objects = frozenset()
    folder = "json"
    media_folder = None
    supports = frozenset()

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        return TaskExport({}, orjson.dumps(task))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result.json": _json_array(fragments)}


class JsonMinExporter:
    """``result.json``: a record per annotation: task data, each control's value under its
    name, and who/when."""

    name = "JSON_MIN"
    title = "JSON-MIN"
    objects = frozenset()
    folder = "json_min"
    media_folder = None
    supports = frozenset()

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        lines = [orjson.dumps(min_record(item)) for item in annotation_items(task, ctx.config)]
        return TaskExport({}, b",\n".join(lines))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result.json": _json_array(fragments)}


def min_record(item: dict[str, Any]) -> dict[str, Any]:
    """One JSON_MIN record."""
    record = dict(item["input"])
    record["id"] = item["id"]
    for name, values in item["output"].items():
        record[name] = prettify(values)
    record["annotator"] = annotator(item, int_id=True)
    for key in META_KEYS[1:]:
        record[key] = item[key]
    return record


for _exporter in (JsonExporter(), JsonMinExporter()):
    register(_exporter)
