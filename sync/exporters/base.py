"""The exporter interface and its registry.

An exporter renders bytes from tasks and never touches storage: ``render_task`` gives a
task's own files (a YOLO label file…) and a *fragment* (its part of the aggregates);
``aggregate`` assembles the project-wide files from the fragments, in task-id order. The
incremental path (per task, as labels change) and ``annosync convert`` run the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync.exporters.regions import ExportContext
from sync.limits import Limits, task_problem


@dataclass
class TaskExport:
    """A task's own output files (paths relative to the format's folder) and its fragment."""

    files: dict[str, bytes] = field(default_factory=dict)
    fragment: bytes = b""


class Exporter(Protocol):
    """One export format."""

    name: str  # as Label Studio names it: "YOLO", "COCO"…
    folder: str  # under exports/<project>/ ("" for the project folder itself)
    title: str  # for humans, in format lists
    supports: frozenset[str]  # label-config control tags it can export (empty: any)
    objects: frozenset[str]  # object tags those controls must label (empty: any)

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        """The task's own files and its fragment."""

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        """Project-wide files from every task's fragment (task-id order)."""


def render_checked(
    exporters: list[Exporter],
    task: dict[str, Any],
    raw: bytes,
    ctx: ExportContext,
    limits: Limits | None = None,
) -> list[TaskExport] | str:
    """Every exporter's export of one task, in order, or why the task cannot be exported:
    over ``limits``, or an exporter failed on its content. The kept-fresh exports, direct
    exports and ``convert`` all leave such a task out, so one task never stops the others."""
    if limits is not None and (problem := task_problem(task, limits)):
        return problem[:500]
    outputs = []
    for exporter in exporters:
        try:
            outputs.append(exporter.render_task(task, raw, ctx))
        except Exception as exc:  # any content a labelling tool let through
            return f"{exporter.name}: {type(exc).__name__}: {exc}"[:500]
    return outputs


_REGISTRY: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    """Make an exporter available by its name."""
    _REGISTRY[exporter.name] = exporter
    return exporter


def get_exporter(name: str) -> Exporter:
    """The exporter called ``name`` (case-insensitive); KeyError names the known ones."""
    try:
        return _REGISTRY[name.upper()]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def exporter_names() -> list[str]:
    """Every registered format name."""
    return sorted(_REGISTRY)
