"""Reading Label Studio payloads: secrets out, timestamps normalised, project found."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

#: Keys of a Label Studio ``project`` object that hold credentials.
PROJECT_SECRET_KEYS = frozenset({"token", "task_data_login", "task_data_password"})


def strip_secrets(body: Any) -> Any:
    """Remove credentials from a delivery body in place and return it.

    Label Studio sends the project's API token and its task-data login/password inside every
    ``project`` object; none of them may be stored or logged.
    """
    if isinstance(body, dict):
        for project in _project_objects(body):
            for key in PROJECT_SECRET_KEYS & project.keys():
                del project[key]
    return body


def _project_objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    project = body.get("project")
    if isinstance(project, dict):
        found.append(project)
    for key in ("task", "tasks"):
        items = body.get(key)
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict) and isinstance(item.get("project"), dict):
                found.append(item["project"])
    return found


def normalise_ts(value: Any) -> str | None:
    """An ISO-8601 timestamp as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), or None if unusable.

    The fixed width makes string comparison equal to time comparison, in SQL too.
    """
    if not isinstance(value, str) or not value:
        return None
    return _normalised(value)


@lru_cache(maxsize=16_384)  # a delivery repeats its project's and task's stamps
def _normalised(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_ts() -> str:
    """The current time in the normalised form."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_id(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def project_of(body: dict[str, Any], url_project: int | None = None) -> int | None:
    """The project a delivery belongs to: its ``project``, its task's, or the URL's."""
    found = _as_id(body.get("project"))
    if found:
        return found
    for key in ("task", "tasks", "annotation"):
        items = body.get(key)
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict) and (found := _as_id(item.get("project"))):
                return found
    return url_project


def is_payloadless(body: dict[str, Any]) -> bool:
    """A ``send_payload=false`` delivery: only the action name."""
    return set(body) == {"action"}


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting stops once ``limit`` is passed."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        nxt = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(v for v in item.values() if isinstance(v, (dict, list)))
            elif isinstance(item, list):
                nxt.extend(v for v in item if isinstance(v, (dict, list)))
        level = nxt
    return depth


def item_count(body: dict[str, Any]) -> int:
    """The largest list of tasks or annotations in a delivery."""
    counts = [
        len(v)
        for k in ("tasks", "task", "annotation", "annotations")
        if isinstance(v := body.get(k), list)
    ]
    return max(counts, default=0)
