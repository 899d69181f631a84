"""BRUSH_TO_PNG and BRUSH_TO_NUMPY: one mask file per brush region of the chosen annotation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters import rle
from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import file_stem, image_url
from sync.exporters.regions import chosen_annotation, strings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def brush_regions(task: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"id", "label", "width", "height", "rle"}`` of every brush region, in result order."""
    found = []
    for item in (chosen_annotation(task) or {}).get("result") or []:
        value = item.get("value")
        if item.get("type") != "brushlabels" or not isinstance(value, dict):
            continue
        width, height = item.get("original_width"), item.get("original_height")
        if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
            continue
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            continue
        labels = strings(value.get("brushlabels")) or ["no_label"]
        found.append(
            {
                "id": str(item.get("id") or ""),
                "label": labels[0],
                "width": width,
                "height": height,
                "rle": value["rle"],
            }
        )
    return found


class BrushExporter:
    """``masks/<stem>/<n>_<label>.png``: 8-bit masks, the brush's alpha (0 outside, 255
    painted); ``masks.json`` indexes them (task, region id, label, file); ``classes.txt``."""

    name = "BRUSH_TO_PNG"
    title = "Brush labels to PNG"
    objects = frozenset({"Image"})
    folder = "brush_to_png"
    media_folder = None
    supports = frozenset({"BrushLabels"})
    suffix = ".png"

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        stem, _ = file_stem(task["id"], image_url(task, ctx.object_value))
        files, index = {}, []
        for n, region in enumerate(brush_regions(task)):
            ctx.class_id(region["label"])
            width, height = region["width"], region["height"]
            try:
                mask = rle.alpha_mask(rle.decode(region["rle"]), width, height)
            except rle.RLEError as exc:
                index.append({"task": task["id"], "region": region["id"], "error": str(exc)})
                continue
            label = _UNSAFE.sub("_", region["label"]).strip("._")[:60] or "label"
            path = f"masks/{stem}/{n}_{label}{self.suffix}"
            files[path] = self.encode(mask, width, height)
            entry = {"task": task["id"], "region": region["id"], "label": region["label"]}
            index.append({**entry, "file": path})
        return TaskExport(files, orjson.dumps(index))

    def encode(self, mask: bytes, width: int, height: int) -> bytes:
        return rle.png(mask, width, height)

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        index = [entry for fragment in fragments for entry in orjson.loads(fragment)]
        return {
            "masks.json": orjson.dumps(index, option=orjson.OPT_INDENT_2),
            "classes.txt": "".join(f"{name}\n" for name in ctx.classes).encode(),
        }


class BrushNumpyExporter(BrushExporter):
    """``masks/<stem>/<n>_<label>.npy``: the same masks as ``uint8`` arrays of shape (H, W)."""

    name = "BRUSH_TO_NUMPY"
    title = "Brush labels to NumPy"
    objects = frozenset({"Image"})
    folder = "brush_to_numpy"
    media_folder = None
    suffix = ".npy"

    def encode(self, mask: bytes, width: int, height: int) -> bytes:
        return rle.npy(mask, width, height)


register(BrushExporter())
register(BrushNumpyExporter())
