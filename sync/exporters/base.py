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

from sync.exporters.regions import forget_regions
from sync.limits import LimitExceeded, Limits, shown, task_problem

DEFAULT_SPLIT = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass
class ExportContext:
    """Project-level facts an exporter renders with."""

    project_id: int
    classes: list[str]  # index = class id
    object_value: str | None = None  # the data key of the image (``image``)
    split: tuple[tuple[str, float], ...] = DEFAULT_SPLIT
    keypoint_labels: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None  # the parsed label config, when known
    max_classes: int | None = None  # a label that would grow the list past it is refused

    def __post_init__(self) -> None:
        self._ids = {name: n for n, name in enumerate(self.classes)}

    def class_id(self, label: str) -> int:
        """The label's class id; a label the list lacks is appended (ids never move).
        Raises :class:`LimitExceeded` when the list is full."""
        found = self._ids.get(label)
        if found is None:
            if self.max_classes is not None and len(self.classes) >= self.max_classes:
                raise LimitExceeded(
                    f"label {shown(label)} would be class {len(self.classes) + 1}; at most "
                    f"{self.max_classes} (ANNOSYNC_MAX_LABELS)"
                )
            found = self._ids[label] = len(self.classes)
            self.classes.append(label)
        return found


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
    # Where the task's image goes beside its files ("images": <folder>/images/<stem><ext>,
    # as the files name it), or None for a format that names no image file.
    media_folder: str | None

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
    try:
        for exporter in exporters:
            try:
                outputs.append(exporter.render_task(task, raw, ctx))
            except Exception as exc:  # any content a labelling tool let through
                return f"{exporter.name}: {type(exc).__name__}: {exc}"[:500]
    finally:
        forget_regions()  # its formats shared the task's regions; the next task is new
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
