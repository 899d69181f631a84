"""BRUSH_TO_COCO: COCO with brush masks as segmentations (Label Studio's format of that name),
boxes, polygons and key points as the COCO format writes them.

Label Studio traces each mask's outline with OpenCV into polygons (losing holes and
one-pixel detail); annosync writes the mask itself as COCO's uncompressed RLE
(``{"counts": [...], "size": [h, w]}``, column-major runs starting with background), which
pycocotools and detectron2 read as they read polygons, without a lossy trace or OpenCV.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters import rle
from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.brush import brush_regions
from sync.exporters.coco import ID_SPAN, CocoExporter

_RUNS = re.compile(rb"\x00+|\x01+")
_BINARY = bytes([0] + [1] * 255)  # any painted alpha counts as the mask


def coco_rle(mask: bytes, width: int, height: int) -> dict[str, Any]:
    """COCO's uncompressed RLE of a row-major 8-bit mask."""
    columns = b"".join(mask[x::width] for x in range(width)).translate(_BINARY)
    counts = [m.end() - m.start() for m in _RUNS.finditer(columns)]
    if columns[:1] == b"\x01":
        counts.insert(0, 0)  # runs start with background
    return {"counts": counts, "size": [height, width]}


def mask_box(mask: bytes, width: int, height: int) -> tuple[list[int], int] | None:
    """``([x, y, w, h], area)`` of the painted pixels, or None for an empty mask."""
    xs, ys, area = [], [], 0
    for y in range(height):
        row = mask[y * width : (y + 1) * width].translate(_BINARY)
        painted = row.count(1)
        if painted:
            area += painted
            ys.append(y)
            xs += [row.index(1), width - 1 - row[::-1].index(1)]
    if not area:
        return None
    return [min(xs), ys[0], max(xs) - min(xs) + 1, ys[-1] - ys[0] + 1], area


class BrushCocoExporter(CocoExporter):
    """``result_coco.json`` as Label Studio names it; brush regions follow the task's
    other regions, with ids from the same stable per-task span."""

    name = "BRUSH_TO_COCO"
    title = "COCO with brush masks (RLE)"
    objects = frozenset({"Image"})
    folder = "brush_to_coco"
    media_folder = "images"
    supports = frozenset({"BrushLabels"})  # without brushes, COCO is the format

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        base = super().render_task(task, raw, ctx)
        image, _, regions = base.fragment.partition(b"\n")
        annotations = orjson.loads(regions)
        image_size = orjson.loads(image)
        first = task["id"] * ID_SPAN + len(annotations) + 1
        for n, region in enumerate(brush_regions(task)):
            width, height = region["width"], region["height"]
            if (image_size["width"], image_size["height"]) not in ((width, height), (None, None)):
                continue  # a mask of another size cannot segment this image
            try:
                mask = rle.alpha_mask(rle.decode(region["rle"]), width, height)
            except rle.RLEError:
                continue  # BRUSH_TO_PNG's masks.json names the corrupt ones
            found = mask_box(mask, width, height)
            if found is None or first + n >= (task["id"] + 1) * ID_SPAN:
                continue
            box, area = found
            annotations.append(
                {
                    "id": first + n,
                    "image_id": task["id"],
                    "category_id": ctx.class_id(region["label"]),
                    "segmentation": coco_rle(mask, width, height),
                    "bbox": box,
                    "area": area,
                    "iscrowd": 0,
                }
            )
        return TaskExport({}, image + b"\n" + orjson.dumps(annotations))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result_coco.json": super().aggregate(fragments, ctx)["result.json"]}


register(BrushCocoExporter())
