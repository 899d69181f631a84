"""A project's class list and export context from its label config."""

from __future__ import annotations

from typing import Any

from sync.exporters.base import DEFAULT_SPLIT, ExportContext
from sync.labelconfig import REGION_TAGS


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
