"""VOC: ``Annotations/<stem>.xml`` per task, Pascal VOC boxes in whole pixels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import file_stem, image_url
from sync.exporters.regions import enclosing_box, image_size, regions


class VocExporter:
    """Rectangles (rotated ones as their enclosing box) with 1-based inclusive pixel corners,
    clipped to the image; ``classes.txt`` lists the labels in class-id order."""

    name = "VOC"
    title = "Pascal VOC XML"
    objects = frozenset({"Image"})
    folder = "voc"
    media_folder = "images"
    supports = frozenset({"RectangleLabels"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        stem, ext = file_stem(task["id"], image_url(task, ctx.object_value))
        boxes = [r for r in regions(task) if r.kind == "box"]
        root = ET.Element("annotation")
        _text(root, "folder", "images")
        _text(root, "filename", stem + ext)
        _text(ET.SubElement(root, "source"), "database", "annosync")
        size = ET.SubElement(root, "size")
        width, height = image_size(task) or (0, 0)
        _text(size, "width", str(round(width)))
        _text(size, "height", str(round(height)))
        _text(size, "depth", "3")
        _text(root, "segmented", "0")
        for region in boxes:
            ctx.class_id(region.label)
            x, y, w, h = enclosing_box(region)
            obj = ET.SubElement(root, "object")
            _text(obj, "name", region.label)
            _text(obj, "pose", "Unspecified")
            _text(obj, "truncated", "0")
            _text(obj, "difficult", "0")
            box = ET.SubElement(obj, "bndbox")
            _text(box, "xmin", str(max(1, round(x) + 1)))
            _text(box, "ymin", str(max(1, round(y) + 1)))
            _text(box, "xmax", str(max(1, min(round(x + w), round(width)))))
            _text(box, "ymax", str(max(1, min(round(y + h), round(height)))))
        ET.indent(root)
        xml = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
        return TaskExport({f"Annotations/{stem}.xml": xml}, b"")

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"classes.txt": "".join(f"{name}\n" for name in ctx.classes).encode()}


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


register(VocExporter())
