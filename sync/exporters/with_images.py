"""Label Studio's ``*_WITH_IMAGES`` formats: a format's files plus each task's image under
``images/<stem><ext>``, the name its labels give it (YOLO_WITH_IMAGES, YOLO_OBB_WITH_IMAGES,
COCO_WITH_IMAGES).

Rendering stays a pure function of the task: the images are added by whoever writes the
export (``with_media``): the media sync for kept-fresh folders, ``annosync convert`` and the
download API from the bucket's copy or the image's source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sync.exporters.base import ExportContext, Exporter, TaskExport, register
from sync.exporters.coco import CocoExporter
from sync.exporters.yolo import YoloExporter, YoloObbExporter


class WithImages:
    """``base``'s files, in their own folder, with the images beside them."""

    with_media = True
    media_folder = "images"

    def __init__(self, base: Exporter) -> None:
        self.base = base
        self.name = f"{base.name}_WITH_IMAGES"
        self.title = f"{base.title} with images"
        self.folder = f"{base.folder}_with_images"
        self.supports = base.supports
        self.objects = base.objects

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        return self.base.render_task(task, raw, ctx)

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return self.base.aggregate(fragments, ctx)


for _base in (YoloExporter(), YoloObbExporter(), CocoExporter()):
    register(WithImages(_base))
