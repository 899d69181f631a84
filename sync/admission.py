"""Admission: whether a delivery is let in (parsed, checked against the schema and the
limits), and what happens to it — accepted into the inbox (:mod:`sync.inbox`, through the
group commit of :mod:`sync.group_commit`) or quarantined with the reasons; a stored delivery
is readmitted by the same checks."""

from __future__ import annotations

import re
from typing import Any

import orjson

from config.validation import Issue, known_action, validate_delivery
from sync import inbox
from sync.group_commit import GroupCommit
from sync.limits import Limits, delivery_issues
from sync.models import Delivery
from sync.payloads import is_payloadless, item_count, json_depth, project_of, prune, strip_secrets
from sync.runtime import Runtime

#: A quarantined body keeps this many levels (orjson writes at most 254).
QUARANTINE_DEPTH = 128
#: Action names as Label Studio writes them (anything else is stored as "?": the column is
#: text, and PostgreSQL refuses NUL in text).
ACTION = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def parse(raw: bytes) -> Any:
    """A delivery's body, parsed, with Label Studio's credentials already removed: every later
    step (limits, validation, errors, answers, the inbox) sees it only so. Raises
    ``orjson.JSONDecodeError``."""
    return strip_secrets(orjson.loads(raw))


def issues(body: Any, raw: bytes, settings: Any, url_project: int | None) -> list[Issue]:
    """Why a parsed delivery cannot be accepted (empty: it can), in the order a sender fixes
    them: size limits, then the schema, then content limits and the project. The receiver
    and ``deliveries replay`` (against the limits in force today) both ask this."""
    return (
        _size_issues(body, raw, settings)
        or validate_delivery(body)
        or delivery_issues(body, Limits.from_settings(settings))
        or _project_issues(body, url_project)
    )


def _size_issues(body: Any, raw: bytes, settings: Any) -> list[Issue]:
    depth = settings.max_json_depth
    # Fewer brackets in the whole body than the limit: it cannot nest deeper (C-speed count).
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > depth and json_depth(body, depth) > depth:
        return [Issue("$", f"JSON nested deeper than {depth} levels", "maxDepth")]
    if isinstance(body, dict) and (count := item_count(body)) > settings.max_items:
        message = f"{count} tasks or annotations in one delivery; at most {settings.max_items}"
        return [Issue("$", message, "maxItems")]
    return []


def _project_issues(body: Any, url_project: int | None) -> list[Issue]:
    """A payload-less delivery (``send_payload=false``) means "pull this project": without a
    project in the URL there is nothing it could ever be applied to."""
    if url_project is None and is_payloadless(body) and known_action(body["action"]):
        message = (
            "a delivery without payload (send_payload=false) names no project: "
            "send it to /webhooks/label-studio/<project id>"
        )
        return [Issue("project_id", message, "required")]
    return []


def accept(
    recorder: GroupCommit,
    body: dict[str, Any],
    raw: bytes,
    url_project: int | None,
    webhook_id: str | None = None,
) -> inbox.Recorded:
    """Record a valid delivery (a body from :func:`parse`) and queue its project's drain.

    The delivery is durable once this returns (recorded with the deliveries of concurrent
    requests, see :mod:`sync.group_commit`); a Redis failure only delays it (the sweep queues it
    later). Database errors propagate: the caller answers 503.
    """
    key = inbox.delivery_key(raw, webhook_id, url_project)
    if is_payloadless(body) and not webhook_id:
        key = None  # identical payload-less bodies are distinct events (each means "pull")
    action = body["action"]
    status = inbox.PENDING if known_action(action) else inbox.IGNORED
    project_id = project_of(body, url_project)
    stored = orjson.dumps(body)
    row = inbox.delivery_row(
        action=action, project_id=project_id, body=stored, key=key, status=status
    )
    return recorder.record(row)


def quarantine(
    rt: Runtime, body: Any, raw: bytes, url_project: int | None, issues: list[Issue]
) -> int:
    """Keep a rejected delivery (a body from :func:`parse`) for inspection and replay."""
    action = body.get("action") if isinstance(body, dict) else None
    project_id = project_of(body, url_project) if isinstance(body, dict) else url_project
    kept = prune(body, QUARANTINE_DEPTH)  # too deep to re-serialise otherwise
    recorded = inbox.record(
        rt.engine,
        action=action if isinstance(action, str) and ACTION.fullmatch(action) else "?",
        project_id=project_id,
        body=orjson.dumps(kept),
        key="rej:" + inbox.delivery_key(raw, None, url_project),
        status=inbox.REJECTED,
        errors=[i.as_dict() for i in issues],
    )
    return recorded.delivery_id


def readmit(row: Delivery, settings: Any) -> list[Issue]:
    """Make a stored delivery pending again if it passes today's checks (schema and limits in
    force now, not when it arrived); otherwise leave it as it is and return why not."""
    body = orjson.loads(row.body)
    if found := issues(body, row.body, settings, row.project_id):
        return found
    if row.status == inbox.REJECTED:
        row.key, row.errors = None, None  # its rejection key would block a real redelivery
    row.status, row.attempts, row.last_error = inbox.PENDING, 0, None
    return []
