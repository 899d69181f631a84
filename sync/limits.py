"""Bounds on what a label config and an annotation may hold.

Every cost of a project scales with these: class lists, exports, rendering time and memory.
They are checked twice: by the receiver where a payload shows them (a 400 naming the field),
and by the worker on what arrives by other ways (pulls from Label Studio, replays, limits
lowered since), where a config over them is refused and a task over them is not exported,
each with its reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from config.validation import Issue
from sync.errors import InvalidInput
from sync.labelconfig import LabelConfigError, parse_label_config

#: Shown of a too-long label in an error (the rest is elided).
SHOWN_CHARS = 40


@dataclass(frozen=True)
class Limits:
    """The limits in force (``ANNOSYNC_MAX_LABELS`` and its siblings)."""

    labels: int = 10_000
    label_chars: int = 256
    regions: int = 10_000
    points: int = 10_000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            settings.max_labels,
            settings.max_label_chars,
            settings.max_regions,
            settings.max_points,
        )


class LimitExceeded(InvalidInput):
    """Something is over a limit; the message names the field, the size and the limit."""


def shown(label: str) -> str:
    return repr(label if len(label) <= SHOWN_CHARS else label[:SHOWN_CHARS] + "…")


def config_issues(xml: str, limits: Limits, path: str = "project.label_config") -> list[Issue]:
    """What makes a label config unusable: not XML, too large, over a limit (empty: fine)."""
    try:
        parsed = _parse(xml)
    except LabelConfigError as exc:
        return [Issue(path, str(exc), "labelConfig")]
    return parsed_config_issues(parsed, limits, path)


@lru_cache(maxsize=64)
def _parse(xml: str) -> dict[str, Any]:
    # Every delivery of a project repeats its config: parse each distinct one once.
    return parse_label_config(xml)


def parsed_config_issues(parsed: dict[str, Any], limits: Limits, path: str) -> list[Issue]:
    """The limits a parsed config breaks (labels, label length, ``category`` values)."""
    controls = parsed.get("controls", [])
    count = sum(len(control["labels"]) for control in controls)
    if count > limits.labels:
        message = f"{count} labels; at most {limits.labels} (ANNOSYNC_MAX_LABELS)"
        return [Issue(path, message, "maxLabels")]
    for control in controls:
        for label in control["labels"]:
            if len(label) > limits.label_chars:
                message = (
                    f"label {shown(label)} of {control['type']} {control['name']!r} has "
                    f"{len(label)} characters; at most {limits.label_chars} "
                    "(ANNOSYNC_MAX_LABEL_CHARS)"
                )
                return [Issue(path, message, "maxLabelLength")]
        for label, category in control.get("categories", {}).items():
            if not 0 <= category < limits.labels:
                message = (
                    f"category {category} of label {shown(label)}: must be from 0 to "
                    f"{limits.labels - 1} (ANNOSYNC_MAX_LABELS)"
                )
                return [Issue(path, message, "category")]
    return []


def result_issues(result: Any, limits: Limits, path: str) -> list[Issue]:
    """The limits an annotation's ``result`` breaks: regions, points per region, labels."""
    if not isinstance(result, list):
        return []
    if len(result) > limits.regions:
        message = f"{len(result)} regions; at most {limits.regions} (ANNOSYNC_MAX_REGIONS)"
        return [Issue(path, message, "maxRegions")]
    for n, item in enumerate(result):
        value = item.get("value") if isinstance(item, dict) else None
        if isinstance(value, dict) and (issue := _value_issue(value, limits, f"{path}[{n}]")):
            return [issue]
    return []


def _value_issue(value: dict[str, Any], limits: Limits, path: str) -> Issue | None:
    points = value.get("points")
    if isinstance(points, list) and len(points) > limits.points:
        message = f"{len(points)} points; at most {limits.points} (ANNOSYNC_MAX_POINTS)"
        return Issue(f"{path}.value.points", message, "maxPoints")
    for key, labels in value.items():
        if not (key.endswith("labels") or key == "choices") or not isinstance(labels, list):
            continue
        for n, label in enumerate(labels):
            if isinstance(label, str) and len(label) > limits.label_chars:
                message = (
                    f"label {shown(label)} has {len(label)} characters; at most "
                    f"{limits.label_chars} (ANNOSYNC_MAX_LABEL_CHARS)"
                )
                return Issue(f"{path}.value.{key}[{n}]", message, "maxLabelLength")
    return None


def delivery_issues(body: dict[str, Any], limits: Limits) -> list[Issue]:
    """The limits a (schema-valid) delivery breaks, named by their path in the body."""
    project = body.get("project")
    config = project.get("label_config") if isinstance(project, dict) else None
    if isinstance(config, str) and (issues := config_issues(config, limits)):
        return issues
    annotations = body.get("annotation")
    if isinstance(annotations, dict):
        return _annotation_issues(annotations, limits, "annotation")
    if isinstance(annotations, list):
        for n, annotation in enumerate(annotations):
            if issues := _annotation_issues(annotation, limits, f"annotation[{n}]"):
                return issues
    tasks = body.get("tasks")
    for n, task in enumerate(tasks if isinstance(tasks, list) else []):
        if issues := task_issues(task, limits, f"tasks[{n}]"):
            return issues
    return []


def _annotation_issues(annotation: Any, limits: Limits, path: str) -> list[Issue]:
    if not isinstance(annotation, dict):
        return []
    return result_issues(annotation.get("result"), limits, f"{path}.result")


def task_issues(task: Any, limits: Limits, path: str = "task") -> list[Issue]:
    """The limits the annotations of a task (a delivery's, or a stored one) break."""
    if not isinstance(task, dict):
        return []
    for key in ("annotations", "completions"):
        items = task.get(key)
        for n, annotation in enumerate(items if isinstance(items, list) else []):
            if issues := _annotation_issues(annotation, limits, f"{path}.{key}[{n}]"):
                return issues
    return []


def task_problem(task: dict[str, Any], limits: Limits) -> str | None:
    """Why a stored task cannot be exported under ``limits`` (None: it can)."""
    issues = task_issues(task, limits)
    return f"{issues[0].path}: {issues[0].message}" if issues else None
