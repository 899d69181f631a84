"""``POST /webhooks/label-studio[/<project_id>]``: authenticate, check, record, queue.

Order of checks: secret (401) → content type (415) → size (413) → signature over the raw
bytes (401) → JSON (400) → secrets stripped → size limits, schema, content limits (400, quarantined;
:func:`sync.admission.issues`) → durable
record (503 if impossible) → queue → 202. Secrets are gone before anything is validated, so
no answer, error text or quarantined body can hold one.
"""

from __future__ import annotations

import logging

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request

from config.validation import Issue
from handlers.auth import GITHUB, secret_matches, verified_scheme
from handlers.errors import error
from handlers.metrics import count_answer
from sync import admission
from sync.errors import Unavailable

log = logging.getLogger("annosync.webhooks")
bp = Blueprint("webhooks", __name__)

STATUS_ANSWER = {"pending": "queued", "duplicate": "duplicate", "ignored": "ignored"}


@bp.post("/webhooks/label-studio")
@bp.post("/webhooks/label-studio/<id:project_id>")
def receive(project_id: int | None = None):
    rt = current_app.config["RUNTIME"]
    with current_app.config["RECORDER"].arriving():
        response = _receive(rt, project_id)
    count_answer(g.get("delivery_action"), response.status_code)
    return response


def _receive(rt, project_id: int | None):
    settings = rt.settings
    shared = secret_matches(request, settings.webhook_header, settings.webhook_secrets)
    if not shared and not settings.signing_secrets:
        return _unauthorized(settings)
    if request.mimetype != "application/json":
        return error(415, "unsupported_media_type", "Content-Type must be application/json")
    if (request.content_length or 0) > settings.max_body_bytes:
        return _too_large(settings.max_body_bytes)
    raw = request.get_data(cache=False)  # MAX_CONTENT_LENGTH also caps chunked bodies
    scheme = None if shared else verified_scheme(request, raw, settings.signing_secrets)
    if not shared and scheme is None:
        return _unauthorized(settings)  # the raw bytes are verified before any parsing
    try:
        body = admission.parse(raw)
    except orjson.JSONDecodeError as exc:
        return error(400, "invalid_json", f"body is not JSON: {exc}")
    if issues := admission.issues(body, raw, settings, project_id):
        return _reject(rt, body, raw, project_id, issues)
    # X-Hub-Signature-256 signs neither an id nor a time: a replay may carry any webhook-id,
    # so such deliveries are told apart by their body and URL only.
    webhook_id = None if scheme == GITHUB else request.headers.get("webhook-id")
    try:
        recorder = current_app.config["RECORDER"]
        recorded = admission.accept(recorder, body, raw, project_id, webhook_id)
    except Unavailable as exc:
        log.error("cannot record delivery: %s", exc.__class__.__name__)
        response = error(503, "unavailable", "cannot record the delivery now; retry")
        response.headers["Retry-After"] = "5"
        return response
    # An action annosync ignores may be any name: counted as "other", the label set stays small.
    g.delivery_action = "other" if recorded.status == "ignored" else body.get("action")
    answer = {"delivery_id": recorded.delivery_id, "status": STATUS_ANSWER[recorded.status]}
    return Response(orjson.dumps(answer), 202, mimetype="application/json")


def _unauthorized(settings):
    how = f"the secret in the {settings.webhook_header} header"
    if settings.signing_secrets:
        how += " or a valid webhook signature"
    return error(401, "unauthorized", f"missing or wrong credentials: expected {how}")


def _too_large(limit: int):
    return error(413, "payload_too_large", f"body larger than {limit} bytes")


def _reject(rt, body, raw: bytes, project_id: int | None, issues: list[Issue]):
    detail = [i.as_dict() for i in issues]
    try:
        quarantined = admission.quarantine(rt, body, raw, project_id, issues)
    except Unavailable:
        quarantined = None
    response = jsonify({"error": "invalid_payload", "detail": detail, "quarantine_id": quarantined})
    response.status_code = 400
    return response
