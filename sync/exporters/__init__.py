"""Export formats: one module per format, each registering its exporters by their Label
Studio names when imported. Every module of this package is imported here, so a new format
is one new module (and its test); helper modules register nothing."""

import importlib
import pkgutil

from sync.exporters.base import (
    ExportContext,
    Exporter,
    TaskExport,
    exporter_names,
    get_exporter,
    render_checked,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ExportContext",
    "Exporter",
    "TaskExport",
    "exporter_names",
    "get_exporter",
    "render_checked",
]
