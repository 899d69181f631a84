"""COCO: ``result.json`` with images (id = task id), annotations and categories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import file_stem, image_url
from sync.exporters.regions import enclosing_box, image_size, regions

#: Annotation ids are ``task id * ID_SPAN + region position``: stable across rebuilds, so
#: one change never renumbers the rest of the file.
ID_SPAN = 10_000


def _round(value: float) -> float:
    return round(value, 4)


def _polygon_area(points: list[tuple[float, float]]) -> float:
    total = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        total += x1 * y2 - x2 * y1
    return abs(total) / 2


class CocoExporter:
    """Boxes (rotated ones as their enclosing box, computed in pixels), polygons with
    ``segmentation``, key points as one-point ``keypoints``; sizes from the task's
    ``original_width``/``original_height``."""

    name = "COCO"
    title = "COCO"
    objects = frozenset({"Image"})
    folder = "coco"
    media_folder = "images"
    supports = frozenset({"RectangleLabels", "PolygonLabels", "KeyPointLabels"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        stem, ext = file_stem(task["id"], image_url(task, ctx.object_value))
        found = regions(task)
        width, height = image_size(task) or (None, None)
        image = {
            "id": task["id"],
            "file_name": f"images/{stem}{ext}",
            "width": width,
            "height": height,
        }
        annotations = [
            self._annotation(task["id"] * ID_SPAN + n, region, ctx)
            for n, region in enumerate(found[: ID_SPAN - 1], start=1)
        ]
        # Two JSON lines, the image and its annotations, so the aggregate can be assembled
        # from bytes without rebuilding Python objects for 100k tasks.
        fragment = orjson.dumps(image) + b"\n" + orjson.dumps(annotations)
        return TaskExport({}, fragment)

    @staticmethod
    def _annotation(ann_id: int, region, ctx: ExportContext) -> dict[str, Any]:
        x, y, w, h = enclosing_box(region)
        item = {
            "id": ann_id,
            "image_id": ann_id // ID_SPAN,
            "category_id": ctx.class_id(region.label),
            "bbox": [_round(x), _round(y), _round(w), _round(h)],
            "iscrowd": 0,
        }
        if region.kind == "polygon":
            item["segmentation"] = [[_round(c) for point in region.points for c in point]]
            item["area"] = _round(_polygon_area(region.points))
        elif region.kind == "point":
            px, py = region.points[0]
            item.update(
                bbox=[_round(px), _round(py), 0, 0],
                area=0,
                num_keypoints=1,
                keypoints=[_round(px), _round(py), 2],
            )
        else:
            item["segmentation"] = []
            item["area"] = _round(w * h)
        return item

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        images, annotations = [], []
        for fragment in fragments:
            image, _, regions = fragment.partition(b"\n")
            images.append(image)
            if regions != b"[]":
                annotations.append(regions[1:-1])
        categories = [{"id": i, "name": name} for i, name in enumerate(ctx.classes)]
        for category in categories:
            if category["name"] in ctx.keypoint_labels:
                category["keypoints"], category["skeleton"] = ["point"], []
        info = {
            "year": None,
            "version": "1.0",
            "description": "",
            "contributor": "annosync",
            "url": "",
            "date_created": None,
        }
        result = b"".join(
            [
                b'{"images":[',
                b",\n".join(images),
                b"],\n",
                b'"categories":',
                orjson.dumps(categories),
                b",\n",
                b'"annotations":[',
                b",\n".join(annotations),
                b"],\n",
                b'"info":',
                orjson.dumps(info),
                b"}\n",
            ]
        )
        return {"result.json": result}


register(CocoExporter())
