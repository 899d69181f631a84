"""JSON Schemas of webhook deliveries, one file per action, and their validators."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).with_name("schemas")

#: Which schema file validates which Label Studio action. Actions not listed here are
#: accepted if the envelope is well formed, and recorded as ignored.
SCHEMA_FOR_ACTION: dict[str, str] = {
    "ANNOTATION_CREATED": "annotation",
    "ANNOTATION_UPDATED": "annotation",
    "ANNOTATIONS_CREATED": "annotations_created",
    "ANNOTATIONS_DELETED": "annotations_deleted",
    "TASKS_CREATED": "tasks_created",
    "TASKS_DELETED": "tasks_deleted",
    "PROJECT_CREATED": "project",
    "PROJECT_UPDATED": "project",
    "PROJECT_DELETED": "project_deleted",
}


@dataclass(frozen=True)
class Issue:
    """One validation failure: where (a dotted path) and which rule."""

    path: str
    message: str
    rule: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "rule": self.rule}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """The compiled validator of schema file ``name`` (without ``.json``).

    References to ``common.json`` are inlined once here: resolving ``$ref`` on every
    request costs more than the rest of validation together.
    """
    schema = _load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_inline(schema, _load("common")["$defs"]), registry=_registry())


@cache
def fast_check(name: str):
    """A compiled (generated Python) validity check of schema file ``name``: the receiver's
    hot path. It only answers valid/invalid; the issues of an invalid body come from
    :func:`validator`, so both must agree (a test holds them to it). The schemas use only
    keywords whose meaning is the same in draft 7, the newest draft fastjsonschema knows."""
    schema = _inline(_load(name), _load("common")["$defs"])
    schema = {k: v for k, v in schema.items() if k not in ("$defs", "$id")}
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and "#/$defs/" in ref:
            target = _inline(defs[ref.rsplit("/", 1)[1]], defs)
            return {**target, **{k: _inline(v, defs) for k, v in node.items() if k != "$ref"}}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def is_id(value: Any) -> bool:
    return type(value) is int and 0 < value < 2**63


def task_shape_problem(task: Any) -> str | None:
    """A fast structural check of one task from an export or a pull (the JSON Schema's
    rules that the store and the exporters rely on); None when the task is usable.

    Bulk paths (convert, pulls of 100k tasks) use this instead of the full schema, which
    costs a millisecond per task.
    """
    if not isinstance(task, dict):
        return "$: is not an object"
    if not is_id(task.get("id")):
        return "id: must be a positive integer"
    if not isinstance(task.get("data", {}), dict):
        return "data: must be an object"
    for key in ("annotations", "completions"):
        items = task.get(key, [])
        if not isinstance(items, list):
            return f"{key}: must be a list"
        for n, annotation in enumerate(items):
            if not isinstance(annotation, dict) or not is_id(annotation.get("id")):
                return f"{key}[{n}].id: must be a positive integer"
            if not isinstance(annotation.get("result", []), list):
                return f"{key}[{n}].result: must be a list"
    return None


def format_path(parts: Iterable[Any]) -> str:
    """``["annotation", "result", 0, "value"]`` → ``annotation.result[0].value``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "$"


def _issues(name: str, body: Any, limit: int) -> list[Issue]:
    try:
        fast_check(name)(body)
        return []
    except fastjsonschema.JsonSchemaException:
        pass  # the full validator names every problem
    errors = sorted(validator(name).iter_errors(body), key=lambda e: list(map(str, e.path)))
    issues = []
    for error in errors[:limit]:
        # oneOf/anyOf failures are clearer through their best sub-error.
        best = min(error.context, key=lambda e: len(e.path), default=error)
        shown = best if error.validator in {"oneOf", "anyOf"} else error
        issues.append(Issue(format_path(shown.absolute_path), shown.message, str(shown.validator)))
    return issues


def validate(name: str, body: Any, limit: int = 20) -> list[Issue]:
    """All problems of ``body`` against schema file ``name`` (empty when it is valid)."""
    return _issues(name, body, limit)


def validate_delivery(body: Any, limit: int = 20) -> list[Issue]:
    """All schema problems of a parsed delivery body (empty when it is valid).

    The envelope is checked first; a body carrying only ``action`` (Label Studio's
    ``send_payload=false``) is valid for every action, since the worker pulls the state.
    """
    issues = _issues("envelope", body, limit)
    if issues:
        return issues
    name = SCHEMA_FOR_ACTION.get(body["action"])
    if name is None or set(body) == {"action"}:
        return []
    return _issues(name, body, limit)


def warm() -> None:
    """Compile every schema's checks now (~200 ms), not on the first deliveries."""
    for name in {"envelope", *SCHEMA_FOR_ACTION.values()}:
        fast_check(name)
        validator(name)


def known_action(action: str) -> bool:
    """Whether annosync applies ``action`` (others are recorded as ignored)."""
    return action in SCHEMA_FOR_ACTION
