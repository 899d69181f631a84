"""Export formats: one module per format, each registered by its Label Studio name."""

from sync.exporters import (  # noqa: F401  (registers the formats)
    asr,
    brush,
    coco,
    conll,
    datagym,
    gcp,
    manifest,
    tabular,
    voc,
    yolo,
)
from sync.exporters.base import Exporter, TaskExport, exporter_names, get_exporter, render_checked
from sync.exporters.regions import ExportContext

__all__ = [
    "ExportContext",
    "Exporter",
    "TaskExport",
    "exporter_names",
    "get_exporter",
    "render_checked",
]
