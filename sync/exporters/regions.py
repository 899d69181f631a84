"""The labelled regions of a task: which annotation counts, and its regions in pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Region result types and the value key holding their labels.
LABELLED_TYPES = {
    "rectanglelabels": "rectanglelabels",
    "polygonlabels": "polygonlabels",
    "keypointlabels": "keypointlabels",
    "brushlabels": "brushlabels",
    "ellipselabels": "ellipselabels",
    "polylinelabels": "polylinelabels",
}


@dataclass
class Region:
    """One labelled region of the chosen annotation, in pixels."""

    region_id: str
    kind: str  # "box" | "polygon" | "point"
    label: str
    points: list[tuple[float, float]]  # box: 4 corners (rotated), polygon: vertices
    width: float  # image size in pixels
    height: float
    rotation: float = 0.0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h (unrotated)
    parent: str = ""  # a key point's box (Label Studio's parentID), if any
    bounds: tuple[float, float, float, float] | None = None  # enclosing_box's, once computed


def strings(value: Any) -> list[str]:
    """A result's list of labels, choices or texts as strings; [] for anything else (exports
    read user files: a malformed value is skipped, never a crash)."""
    return [str(v) for v in value] if isinstance(value, list) else []


def chosen_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The annotation that counts: the newest non-cancelled one, a ground-truth one first."""
    candidates = [
        a
        for a in task.get("annotations") or task.get("completions") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda a: (
            bool(a.get("ground_truth")),
            str(a.get("updated_at") or ""),
            a.get("id") or 0,
        ),
    )


def regions(task: dict[str, Any]) -> tuple[Region, ...]:
    """The labelled regions of the chosen annotation, in result order.

    Every format of a task asks for them in turn: the last task's are kept and handed out
    again while the caller passes the same dict (held here, so its id cannot be reused),
    until :func:`forget_regions`, which ``render_checked`` calls after each task, so a task
    changed in place between two renders is never served its old regions. Exporters treat
    a task and its regions as read-only; a region's only mutable field, ``bounds``, is a
    cache of a pure function of it."""
    global _last_regions
    last = _last_regions  # one read: a thread sees a whole (task, regions) pair
    if last[0] is task:
        return last[1]
    annotation = chosen_annotation(task)
    found = []
    for item in (annotation or {}).get("result") or []:
        region = region_of(item)
        if region is not None and _inside(region):
            found.append(region)
    result = tuple(found)
    _last_regions = (task, result)
    return result


_last_regions: tuple[Any, tuple[Region, ...]] = (None, ())


def forget_regions() -> None:
    """Let the next :func:`regions` call compute afresh."""
    global _last_regions
    _last_regions = (None, ())


#: Image sides from this size on are not believed (a hostile result's 1.8e19 stays out).
MAX_PX = 2**31

#: Below this size in pixels a clipped box is empty (rotations leave 1e-14 px, not 0).
EMPTY_PX = 1e-3


def _inside(region: Region) -> bool:
    """Whether a box or polygon covers part of the image: one lying wholly outside would
    export as a zero-size box, which trainers reject."""
    if region.kind == "point":
        return True
    _, _, w, h = enclosing_box(region)
    return w > EMPTY_PX and h > EMPTY_PX


def image_size(task: dict[str, Any]) -> tuple[int, int] | None:
    """The image's size in whole pixels as the annotations record it (the chosen annotation
    first, then any other), or None when no result carries it."""
    chosen = chosen_annotation(task)
    others = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    for annotation in [chosen, *others] if chosen else others:
        for item in annotation.get("result") or []:
            if not isinstance(item, dict):
                continue
            width, height = item.get("original_width"), item.get("original_height")
            if _positive(width) and _positive(height) and max(width, height) < MAX_PX:
                return round(width), round(height)
    return None


def region_of(item: dict[str, Any]) -> Region | None:
    """The region a result item draws, in pixels; None for anything else."""
    kind = item.get("type")
    value = item.get("value")
    if kind not in LABELLED_TYPES or not isinstance(value, dict):
        return None
    labels = strings(value.get(LABELLED_TYPES[kind]))
    width, height = item.get("original_width"), item.get("original_height")
    if not labels or not _positive(width) or not _positive(height):
        return None
    label = str(labels[0]).replace("\n", " ").strip()
    rid = str(item.get("id") or "")
    try:
        if kind == "rectanglelabels":
            return _box(rid, label, value, float(width), float(height))
        if kind in {"polygonlabels", "polylinelabels"}:
            points = [
                (float(x) * width / 100, float(y) * height / 100)
                for x, y in value.get("points") or []
            ]
            return (
                Region(rid, "polygon", label, points, width, height) if len(points) >= 3 else None
            )
        if kind == "keypointlabels":
            point = (float(value["x"]) * width / 100, float(value["y"]) * height / 100)
            parent = str(item.get("parentID") or "")
            return Region(rid, "point", label, [point], width, height, parent=parent)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _positive(number: Any) -> bool:
    return isinstance(number, (int, float)) and not isinstance(number, bool) and number > 0


def _box(rid: str, label: str, value: dict, width: float, height: float) -> Region:
    """A rectangle rotated around its top-left corner, in pixel space (correct on
    non-square images, unlike rotating percentages)."""
    x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
    w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
    rotation = float(value.get("rotation") or 0.0)
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    corners = [
        (x + dx * cos - dy * sin, y + dx * sin + dy * cos)
        for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))
    ]
    return Region(rid, "box", label, corners, width, height, rotation, (x, y, w, h))


def enclosing_box(region: Region) -> tuple[float, float, float, float]:
    """Axis-aligned ``x, y, w, h`` around the region, clipped to the image (computed once
    per region: every exporter and the emptiness check ask for it)."""
    if region.bounds is None:
        xs = [px for px, _ in region.points]
        ys = [py for _, py in region.points]
        # clipping is monotonic: clip(min) == min(clip), so clip the extremes only
        left, right = _clip(min(xs), region.width), _clip(max(xs), region.width)
        top, bottom = _clip(min(ys), region.height), _clip(max(ys), region.height)
        region.bounds = (left, top, right - left, bottom - top)
    return region.bounds


def _clip(value: float, limit: float) -> float:
    return 0.0 if value < 0.0 else limit if value > limit else value
