"""Reading Label Studio payloads: secrets out, timestamps normalised, project found."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

#: Keys of a Label Studio ``project`` object that hold credentials.
PROJECT_SECRET_KEYS = frozenset({"token", "task_data_login", "task_data_password"})
#: Ids are positive and fit a signed 64-bit column (Label Studio's too).
MAX_ID = 2**63


# User content that Label Studio never nests a project object in: not walked (it is most of a
# large import's bytes).
_CONTENT_KEYS = frozenset({"data", "result", "meta", "label_config"})


def strip_secrets(body: Any) -> Any:
    """Remove credentials from a delivery body in place and return it.

    Label Studio sends the project's API token and its task-data login/password inside every
    ``project`` object; none of them may be stored, logged or echoed. Every ``project``
    object at any depth is cleaned (arrays and nested tasks included); the walk uses a stack,
    so no nesting depth makes it fail.
    """
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, (dict, list)))
            continue
        if not isinstance(node, dict):
            continue
        project = node.get("project")
        if isinstance(project, dict):
            for key in PROJECT_SECRET_KEYS & project.keys():
                del project[key]
        stack.extend(
            value
            for key, value in node.items()
            if key not in _CONTENT_KEYS and isinstance(value, (dict, list))
        )
    return body


def prune(value: Any, depth: int) -> Any:
    """``value`` with every object or array nested deeper than ``depth`` replaced by a short
    marker: what is kept of a too-deep body (its top levels stay readable)."""
    if not isinstance(value, (dict, list)):
        return value
    if depth <= 0:
        return "<nested deeper: removed>"
    if isinstance(value, dict):
        return {key: prune(item, depth - 1) for key, item in value.items()}
    return [prune(item, depth - 1) for item in value]


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


def storable(text: str, limit: int = 2000) -> str:
    """``text`` as a stored reason or title: NUL replaced (PostgreSQL's text refuses it, and
    the text may echo a payload) and at most ``limit`` characters."""
    return text.replace("\x00", "\ufffd")[:limit]


def now_ts() -> str:
    """The current time in the normalised form."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_id(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_ID:
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
