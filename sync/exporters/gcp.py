"""GCP_CSV and GCP_JSONL: Google Cloud Data Labeling Service ExportData files.

Image classification, bounding boxes (unrotated: top-left and bottom-right; rotated: all
four corners), polygons and polylines, text classification and (JSONL only, as Google
does) text entities. Coordinates are normalised to 0-1; the ML-use column comes from the
stable split instead of ``UNASSIGNED``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import file_stem, image_url, object_data, split_of
from sync.exporters.regions import Region, chosen_annotation, region_of, strings

ML_USE = {"train": "TRAIN", "val": "VALIDATION", "test": "TEST"}
MIME = {".png": "IMAGE_PNG", ".gif": "IMAGE_GIF", ".webp": "IMAGE_WEBP", ".bmp": "IMAGE_BMP"}
URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _num(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.6f}".rstrip("0").rstrip(".") or "0"


def vertices(region: Region) -> list[tuple[float, float]]:
    """Normalised vertices: a box as top-left + bottom-right unless it is rotated."""
    points = region.points
    if region.kind == "box" and not region.rotation:
        points = [points[0], points[2]]
    return [(x / region.width, y / region.height) for x, y in points]


def task_facts(task: dict[str, Any], ctx: ExportContext) -> dict[str, Any] | None:
    """What both files are made of: the item, the ML use and the labelled things."""
    annotation = chosen_annotation(task)
    if annotation is None:
        return None
    facts: dict[str, Any] = {"classes": [], "shapes": [], "entities": []}
    for item in annotation.get("result") or []:
        value = item.get("value") if isinstance(item.get("value"), dict) else {}
        if item.get("type") == "choices":
            facts["classes"] += strings(value.get("choices"))
        elif item.get("type") == "labels" and isinstance(value.get("start"), int):
            for label in strings(value.get("labels")):
                facts["entities"].append((label, value["start"], value.get("end")))
        elif (region := region_of(item)) is not None and region.kind in ("box", "polygon"):
            line = item.get("type") == "polylinelabels"
            facts["shapes"].append((region.label, vertices(region), line, str(item.get("id"))))
    facts["text"] = object_data(task, ctx, ("Text", "HyperText"))  # None: an image project
    facts["uri"] = image_url(task, ctx.object_value) if facts["text"] is None else None
    facts["ml_use"] = ML_USE.get(split_of(task["id"], ctx.split), "UNASSIGNED")
    return facts


class GcpCsvExporter:
    """``export.csv``: one line per classification (all its labels) and per shape."""

    name = "GCP_CSV"
    title = "Google Data Labeling CSV"
    objects = frozenset({"Image", "Text", "HyperText"})
    folder = "gcp_csv"
    media_folder = None
    supports = frozenset({"Choices", "RectangleLabels", "PolygonLabels", "PolyLineLabels"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        facts = task_facts(task, ctx)
        if facts is None:
            return TaskExport({}, b"")
        item = facts["uri"] if facts["text"] is None else facts["text"]
        rows = []
        if facts["classes"]:
            rows.append([facts["ml_use"], item, *facts["classes"]])
        for label, points, _, _ in facts["shapes"] if facts["text"] is None else []:
            rows.append([facts["ml_use"], item, label, *_point_cells(points)])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return TaskExport({}, out.getvalue().encode())

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"export.csv": b"".join(fragments)}


def _point_cells(points: list[tuple[float, float]]) -> list[str]:
    """``x,y,,`` per point: the two empty cells are Google's (unused) redundant corner."""
    return [cell for x, y in points for cell in (_num(x), _num(y), "", "")]


class GcpJsonlExporter:
    """``export.jsonl``: one example per labelled task, with all its annotations."""

    name = "GCP_JSONL"
    title = "Google Data Labeling JSONL"
    objects = frozenset({"Image", "Text", "HyperText"})
    folder = "gcp_jsonl"
    media_folder = None
    supports = frozenset(
        {"Choices", "RectangleLabels", "PolygonLabels", "PolyLineLabels", "Labels"}
    )

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        facts = task_facts(task, ctx)
        if facts is None:
            return TaskExport({}, b"")
        project = task.get("project") if isinstance(task.get("project"), int) else ctx.project_id
        name = (
            f"projects/annosync/datasets/{project}/annotatedDatasets/"
            f"{project}/examples/{int(task['id'])}"
        )
        values = _annotation_values(facts)
        example: dict[str, Any] = {"name": name, **_payload(task, facts)}
        example["annotations"] = [
            {"name": f"{name}/annotations/{n}", "annotationValue": value}
            for n, value in enumerate(values)
        ]
        return TaskExport({}, orjson.dumps(example))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"export.jsonl": b"".join(f + b"\n" for f in fragments if f)}


def _payload(task: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    text = facts["text"]
    if text is None:
        _, ext = file_stem(task["id"], facts["uri"])
        return {"imagePayload": {"mimeType": MIME.get(ext, "IMAGE_JPEG"), "imageUri": facts["uri"]}}
    if URI.match(text):
        return {"textPayload": {"textUri": text}}
    return {"textPayload": {"textContent": text, "wordCount": len(text.split())}}


def _annotation_values(facts: dict[str, Any]) -> list[dict[str, Any]]:
    text = facts["text"] is not None
    kind = "textClassificationAnnotation" if text else "imageClassificationAnnotation"
    values = [{kind: {"annotationSpec": {"displayName": c}}} for c in facts["classes"]]
    for label, points, line, _ in [] if text else facts["shapes"]:
        spec = {"displayName": label}
        vertices = [{"x": round(x, 6), "y": round(y, 6)} for x, y in points]
        if line:
            shape = {"annotationSpec": spec, "normalizedPolyline": {"normalizedVertices": vertices}}
            values.append({"imagePolylineAnnotation": shape})
        else:
            poly = {"normalizedVertices": vertices}
            shape = {"annotationSpec": spec, "normalizedBoundingPoly": poly}
            values.append({"imageBoundingPolyAnnotation": shape})
    for label, start, end in facts["entities"] if text else []:
        segment = {"startOffset": start, "endOffset": end}
        entity = {"annotationSpec": {"displayName": label}, "textSegment": segment}
        values.append({"textEntityExtractionAnnotation": entity})
    return values


register(GcpCsvExporter())
register(GcpJsonlExporter())
