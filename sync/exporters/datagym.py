"""DATAGYM: the DataGym.ai export, ``export.json``.

One JSON array: ``{"label_classes": [...]}`` first, then one object per task with
``internal_media_ID``, ``external_media_ID``, ``labeler``, ``status``,
``global_classifications`` and ``labels`` (geometry in integer pixels). A label used by two
geometry controls (a box "Car" and a polygon "Car") becomes two classes, ``Car_rectangle``
and ``Car_polygon``: DataGym class names are unique.
"""

from __future__ import annotations

from collections.abc import Iterable
from posixpath import basename
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import image_url, url_path
from sync.exporters.records import annotator
from sync.exporters.regions import chosen_annotation, enclosing_box, region_of, strings

GEOMETRY = {
    "RectangleLabels": "rectangle",
    "PolygonLabels": "polygon",
    "PolyLineLabels": "line",
    "KeyPointLabels": "point",
}
RESULT_GEOMETRY = {
    "rectanglelabels": "rectangle",
    "polygonlabels": "polygon",
    "polylinelabels": "line",
    "keypointlabels": "point",
}


def geometry_kinds(config: dict[str, Any] | None) -> dict[str, list[str]]:
    """Each region label of the config and the geometry types it is drawn with."""
    kinds: dict[str, list[str]] = {}
    for control in (config or {}).get("controls", []):
        for label in control["labels"] if control["type"] in GEOMETRY else []:
            if GEOMETRY[control["type"]] not in kinds.setdefault(label, []):
                kinds[label].append(GEOMETRY[control["type"]])
    return kinds


def label_classes(config: dict[str, Any] | None) -> list[dict[str, str]]:
    """The header's classes, from the label config."""
    classifications = []
    for control in (config or {}).get("controls", []):
        if control["type"] == "Choices":
            kind = "checklist" if control.get("choice") == "multiple" else "select"
            if kind == "select" and len(control["labels"]) <= 3:
                kind = "radio"
            classifications.append({"class_name": control["name"], "classification_type": kind})
        elif control["type"] == "TextArea":
            classifications.append(
                {"class_name": control["name"], "classification_type": "freetext"}
            )
    out = [
        {"class_name": class_name(label, kind, kinds), "geometry_type": kind}
        for label, kinds in geometry_kinds(config).items()
        for kind in kinds
    ]
    return out + classifications


def class_name(label: str, geometry: str, kinds: list[str]) -> str:
    """A label's class name: the label, suffixed with the geometry when it has several."""
    return label if len(kinds) <= 1 else f"{label}_{geometry}"


def _geometry(region) -> list[dict[str, int]]:
    if region.kind == "box":
        x, y, w, h = enclosing_box(region)
        return [{"x": round(x), "y": round(y), "w": round(w), "h": round(h)}]
    return [{"x": round(px), "y": round(py)} for px, py in region.points]


def _classification(item: dict[str, Any]) -> tuple[str, list] | None:
    value = item.get("value") if isinstance(item.get("value"), dict) else {}
    if item.get("type") == "choices":
        return str(item.get("from_name")), strings(value.get("choices"))
    if item.get("type") == "textarea":
        return str(item.get("from_name")), strings(value.get("text"))
    return None


class DatagymExporter:
    """Rectangles, polygons, lines and points with their per-region classifications;
    image-level Choices/TextArea as global classifications."""

    name = "DATAGYM"
    title = "DataGym.ai JSON"
    objects = frozenset({"Image"})
    folder = "datagym"
    media_folder = None
    supports = frozenset(
        {"RectangleLabels", "PolygonLabels", "PolyLineLabels", "KeyPointLabels", "Choices"}
    )

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        annotations = task.get("annotations") or []
        chosen = chosen_annotation(task)
        status = "completed" if chosen else "skipped" if annotations else "waiting"
        url = image_url(task, ctx.object_value)
        record = {
            "internal_media_ID": str(task["id"]),
            "external_media_ID": basename(url_path(url)) or None,
            "labeler": annotator({"completed_by": chosen["completed_by"]}, True)
            if chosen and "completed_by" in chosen
            else None,
            "status": status,
            "global_classifications": {},
            "labels": {},
        }
        self._fill(record, (chosen or {}).get("result") or [], ctx)
        return TaskExport({}, orjson.dumps(record))

    def _fill(self, record: dict[str, Any], results: list, ctx: ExportContext) -> None:
        kinds = geometry_kinds(ctx.config)
        shapes: dict[str, dict] = {}
        for item in results:
            region = region_of(item)
            geometry = RESULT_GEOMETRY.get(str(item.get("type")))
            if region is not None and geometry is not None:
                name = class_name(region.label, geometry, kinds.get(region.label, []))
                entry = {geometry: _geometry(region), "classifications": {}}
                entry["nested_geometries"] = {}
                record["labels"].setdefault(name, []).append(entry)
                shapes[str(item.get("id"))] = entry
        for item in results:
            found = _classification(item)
            if found is not None:
                target = shapes.get(str(item.get("id")))
                bucket = target["classifications"] if target else record["global_classifications"]
                bucket.setdefault(found[0], []).extend(found[1])

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        head = orjson.dumps({"label_classes": label_classes(ctx.config)})
        body = b",\n".join([head, *(f for f in fragments if f)])
        return {"export.json": b"[\n" + body + b"\n]\n"}


register(DatagymExporter())
