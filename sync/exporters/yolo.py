"""YOLO: ``labels/<stem>.txt`` per task, ``classes.txt``, ``notes.json`` and ``data.yaml``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import file_stem, image_url, split_of
from sync.exporters.regions import Region, enclosing_box, regions


def _num(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


class YoloExporter:
    """Boxes as ``cls xc yc w h`` (rotated ones as their enclosing box), polygons as
    YOLO-seg lines ``cls x1 y1 …``; all normalised to the image size."""

    name = "YOLO"
    title = "YOLO (labels, classes.txt, data.yaml)"
    objects = frozenset({"Image"})
    folder = "yolo"
    media_folder = "images"
    supports = frozenset({"RectangleLabels", "PolygonLabels"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        stem, ext = file_stem(task["id"], image_url(task, ctx.object_value))
        lines = []
        found = regions(task)
        points = _points_by_box(found) if self.pose(ctx) else None
        for region in found:
            values = self.values(region)
            if values is None:
                continue
            if points is not None:
                if region.kind != "box":
                    continue  # a pose dataset is boxes with their key points only
                values += _key_points(points.get(region.region_id, []), ctx.keypoint_labels)
            lines.append(" ".join([str(ctx.class_id(region.label)), *map(_num, values)]))
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        fragment = orjson.dumps(
            {"image": f"images/{stem}{ext}", "split": split_of(task["id"], ctx.split)}
        )
        return TaskExport({f"labels/{stem}.txt": body}, fragment)

    def pose(self, ctx: ExportContext) -> bool:
        """Ultralytics pose lines (``cls xc yc w h`` then ``x y v`` per key point label),
        as label-studio-sdk writes them, when the label config has key point labels."""
        return bool(ctx.keypoint_labels)

    def values(self, region: Region) -> list[float] | None:
        """The normalised numbers after the class id, or None for a region not exported."""
        if region.kind == "box":
            x, y, w, h = enclosing_box(region)
            return [
                (x + w / 2) / region.width,
                (y + h / 2) / region.height,
                w / region.width,
                h / region.height,
            ]
        if region.kind == "polygon":
            return [
                c
                for px, py in region.points
                for c in (
                    min(max(px / region.width, 0.0), 1.0),
                    min(max(py / region.height, 0.0), 1.0),
                )
            ]
        return None

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        splits: dict[str, list[str]] = {name: [] for name, _ in ctx.split}
        for fragment in fragments:
            item = orjson.loads(fragment)
            splits.setdefault(item["split"], []).append(item["image"])
        files = {
            f"{name}.txt": "".join(f"./{p}\n" for p in paths).encode()
            for name, paths in splits.items()
        }
        files["classes.txt"] = "".join(f"{name}\n" for name in ctx.classes).encode()
        files["notes.json"] = orjson.dumps(
            {
                "categories": [{"id": i, "name": n} for i, n in enumerate(ctx.classes)],
                "info": {"year": None, "version": "1.0", "contributor": "annosync"},
            },
            option=orjson.OPT_INDENT_2,
        )
        kpt = len(ctx.keypoint_labels) if self.pose(ctx) else 0
        files["data.yaml"] = _data_yaml(ctx.classes, [name for name, _ in ctx.split], kpt)
        return files


def _points_by_box(found: list[Region]) -> dict[str, list[Region]]:
    points: dict[str, list[Region]] = {}
    for region in found:
        if region.kind == "point" and region.parent:
            points.setdefault(region.parent, []).append(region)
    return points


def _key_points(points: list[Region], labels: list[str]) -> list[float]:
    """``x y v`` for each key point label in config order: a point of the box (visible, v=2)
    or ``0 0 0`` (absent), so every line has the same length, as Ultralytics requires."""
    values: list[float] = []
    for label in labels:
        point = next((p for p in points if p.label == label), None)
        if point is None:
            values += [0.0, 0.0, 0.0]
            continue
        px, py = point.points[0]
        values += [min(max(px / point.width, 0.0), 1.0), min(max(py / point.height, 0.0), 1.0)]
        values.append(2.0)
    return values


def _data_yaml(classes: list[str], splits: list[str], kpt: int = 0) -> bytes:
    """Ultralytics dataset file: image lists per split, names by id. No ``path:``: then
    Ultralytics resolves the lists against this file's folder (``path: .`` would be the
    trainer's working directory), and each list's ``./images/…`` against the list's."""
    lines = ["# Ultralytics YOLO dataset, written by annosync"]
    key = {"train": "train", "val": "val", "test": "test"}
    lines += [f"{key.get(name, name)}: {name}.txt" for name in splits]
    if kpt:
        lines.append(f"kpt_shape: [{kpt}, 3]")
    lines.append(f"nc: {len(classes)}")
    lines.append("names:")
    lines += [f"  {i}: {orjson.dumps(name).decode()}" for i, name in enumerate(classes)]
    return ("\n".join(lines) + "\n").encode()


class YoloObbExporter(YoloExporter):
    """Ultralytics OBB: every box as its four corners ``cls x1 y1 x2 y2 x3 y3 x4 y4``,
    rotated in pixel space then normalised (unrotated boxes too: rotation 0)."""

    name = "YOLO_OBB"
    title = "YOLOv8 OBB (rotated boxes as four corners)"
    objects = frozenset({"Image"})
    folder = "yolo_obb"
    media_folder = "images"
    supports = frozenset({"RectangleLabels"})

    def pose(self, ctx: ExportContext) -> bool:
        return False

    def values(self, region: Region) -> list[float] | None:
        if region.kind != "box":
            return None
        # Clipped to [0, 1]: Ultralytics skips an image with any corner outside as corrupt.
        return [
            min(max(c, 0.0), 1.0)
            for px, py in region.points
            for c in (px / region.width, py / region.height)
        ]


register(YoloExporter())
register(YoloObbExporter())
