"""What every exporter needs from a task: which annotation counts, its regions in pixels,
class ids, a safe file stem, and the stable split."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from posixpath import basename, splitext
from typing import Any
from urllib.parse import unquote, urlparse

from sync.labelconfig import REGION_TAGS
from sync.limits import LimitExceeded, shown

#: Region result types and the value key holding their labels.
LABELLED_TYPES = {
    "rectanglelabels": "rectanglelabels",
    "polygonlabels": "polygonlabels",
    "keypointlabels": "keypointlabels",
    "brushlabels": "brushlabels",
    "ellipselabels": "ellipselabels",
    "polylinelabels": "polylinelabels",
}
DEFAULT_SPLIT = (("train", 0.8), ("val", 0.1), ("test", 0.1))


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


def regions(task: dict[str, Any]) -> list[Region]:
    """The labelled regions of the chosen annotation, in result order."""
    annotation = chosen_annotation(task)
    found = []
    for item in (annotation or {}).get("result") or []:
        region = region_of(item)
        if region is not None:
            found.append(region)
    return found


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
            return Region(rid, "point", label, [point], width, height)
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
    """Axis-aligned ``x, y, w, h`` around the region, clipped to the image."""
    xs = [min(max(px, 0.0), region.width) for px, _ in region.points]
    ys = [min(max(py, 0.0), region.height) for _, py in region.points]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_url(task: dict[str, Any], object_value: str | None) -> str:
    """The task's image reference (the config's object value key, else the first string)."""
    data = task.get("data") or {}
    if object_value and isinstance(data.get(object_value), str):
        return data[object_value]
    return next((v for v in data.values() if isinstance(v, str)), "")


def object_data(task: dict[str, Any], ctx: ExportContext, types: tuple[str, ...]) -> str | None:
    """The task's string under the data key of the config's first object tag of ``types``
    (``Text``, ``Audio``…); None without a config or such a value."""
    data = task.get("data") or {}
    for obj in (ctx.config or {}).get("objects", []):
        if obj["type"] in types and isinstance(data.get(obj["value"]), str):
            return data[obj["value"]]
    return None


def url_path(url: str) -> str:
    """The percent-decoded path of a media URL. A URL Python cannot parse (``http://[::1/x``,
    an unclosed IPv6 host) still has a path: the text before any query or fragment, after
    the host, so a task with such a URL exports like any other instead of failing."""
    try:
        path = urlparse(url).path
    except ValueError:
        path = re.split(r"[?#]", url, maxsplit=1)[0]
        scheme, sep, rest = path.partition("://")
        path = "/" + rest.partition("/")[2] if sep else scheme
    return unquote(path or "")


def file_stem(task_id: int, url: str) -> tuple[str, str]:
    """A safe, stable, collision-free file stem and the image extension.

    ``<task id>__<sanitised basename>``: the basename comes from the URL path (query and
    fragment dropped, percent-decoding applied), with anything but ``[A-Za-z0-9._-]``
    replaced; no ``/``, ``..`` or control characters survive; length is bounded. The task
    id prefix keeps two tasks with the same basename apart.
    """
    name = basename(url_path(url).replace("\\", "/"))
    stem, ext = splitext(name)
    stem = _UNSAFE.sub("_", stem).strip("._")[:80] or "image"
    ext = ext.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", ext.lower()) else ".jpg"
    return f"{int(task_id)}__{stem}", ext


def split_of(task_id: int, ratios: tuple[tuple[str, float], ...] = DEFAULT_SPLIT) -> str:
    """The task's split: a pure function of its id, so it never moves as the project grows."""
    digest = hashlib.sha256(f"annosync-split:{int(task_id)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(share for _, share in ratios)
    edge = 0.0
    for name, share in ratios:
        edge += share / total
        if fraction < edge:
            return name
    return ratios[-1][0]


def config_classes(parsed_config: dict[str, Any] | None) -> list[str]:
    """Class names from the region tags of a parsed config, in config order, honouring
    ``category="N"`` (Choices never become classes). Linear in the number of labels; the
    list is as long as the largest category + 1 or the label count, whichever is larger
    (the receiver and the worker bound both by ``ANNOSYNC_MAX_LABELS``)."""
    if not parsed_config:
        return []
    explicit: dict[int, str] = {}
    placed: set[str] = set()
    ordered: dict[str, None] = {}
    for control in parsed_config.get("controls", []):
        if control["type"] not in REGION_TAGS:
            continue
        for label in control["labels"]:
            category = control.get("categories", {}).get(label)
            free = category is not None and category >= 0 and category not in explicit
            if free and label not in placed:
                explicit[category] = label
                placed.add(label)
                continue
            ordered.setdefault(label, None)
    return _place(explicit, [label for label in ordered if label not in placed])


def _place(explicit: dict[int, str], rest: list[str]) -> list[str]:
    """Explicit categories at their index; the other labels fill the gaps, then follow."""
    size = max([*explicit, -1]) + 1
    classes: list[str | None] = [explicit.get(i) for i in range(size)]
    gaps = iter([i for i, c in enumerate(classes) if c is None])
    for label in rest:
        gap = next(gaps, None)
        if gap is None:
            classes.append(label)
        else:
            classes[gap] = label
    return [c if c is not None else f"__unused_{i}__" for i, c in enumerate(classes)]


def extend_classes(classes: list[str], labels: list[str]) -> list[str]:
    """``classes`` with the labels it lacks appended (existing ids never move)."""
    out, known = list(classes), set(classes)
    for label in labels:
        if label not in known:
            out.append(label)
            known.add(label)
    return out


def image_object_value(parsed_config: dict[str, Any] | None) -> str | None:
    """The data key of the first Image object tag."""
    for obj in (parsed_config or {}).get("objects", []):
        if obj["type"] == "Image":
            return obj["value"] or None
    return None


def context_from_config(
    project_id: int,
    known_classes: list[str],
    parsed_config: dict[str, Any] | None,
    split: tuple[tuple[str, float], ...] = DEFAULT_SPLIT,
) -> ExportContext:
    """The export context of a project: the classes it already has, then the config's."""
    keypoints = [
        label
        for control in (parsed_config or {}).get("controls", [])
        if control["type"] == "KeyPointLabels"
        for label in control["labels"]
    ]
    return ExportContext(
        project_id,
        extend_classes(known_classes, config_classes(parsed_config)),
        image_object_value(parsed_config),
        split,
        keypoints,
        parsed_config,
    )
