"""Webhook authentication: the shared-secret header, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Request, current_app, request

from handlers.errors import error
from sync import signing


def secret_matches(request: Request, header: str, secrets: tuple[str, ...]) -> bool:
    """Whether the request carries one of ``secrets`` in ``header``.

    For ``Authorization`` the value is ``Bearer <secret>``; for any other header, the bare
    secret. Every configured secret is compared (no early exit) so timing reveals nothing.
    """
    value = request.headers.get(header, "")
    if header.lower() == "authorization":
        scheme, _, value = value.partition(" ")
        if scheme.lower() != "bearer":
            value = ""
    presented = value.strip().encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, secret.encode())
    return matched and bool(presented)


def api_token_matches(request: Request, token: str | None) -> bool:
    """``Authorization: Token <token>`` for the ``/api/...`` routes."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "token":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


SIGNATURE_TOLERANCE_S = 300


STANDARD, GITHUB = "standard-webhooks", "x-hub-signature-256"
_MAX_STAMP_DIGITS = 12  # seconds since 1970 fit in 11 digits until the year 5138


def verified_scheme(
    request: Request, raw: bytes, secrets: tuple[str, ...], now: float | None = None
) -> str | None:
    """Which HMAC-SHA256 scheme the raw body is validly signed with, or None.

    Standard Webhooks (``STANDARD``): ``webhook-signature: v1,<base64>`` (several,
    space-separated) over ``<webhook-id>.<webhook-timestamp>.<body>``, the timestamp (ASCII
    digits) within 300 s of now: replay-safe, its ``webhook-id`` is signed.
    GitHub (``GITHUB``): ``X-Hub-Signature-256: sha256=<hex>`` over the body alone: no
    timestamp and no id are signed, so the caller must not trust ``webhook-id`` with it.
    """
    if not secrets:
        return None
    if _standard_valid(request, raw, secrets, now or time.time()):
        return STANDARD
    github = request.headers.get("X-Hub-Signature-256", "")
    valid = False
    if github.startswith("sha256="):
        for secret in secrets:
            expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            valid |= hmac.compare_digest(github.encode(), expected.encode())
    return GITHUB if valid else None


def _standard_valid(request: Request, raw: bytes, secrets: tuple[str, ...], now: float) -> bool:
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    signatures = request.headers.get("webhook-signature", "")
    if not (msg_id and signatures and stamp.isascii() and stamp.isdigit()):
        return False
    if len(stamp) > _MAX_STAMP_DIGITS or abs(now - int(stamp)) > SIGNATURE_TOLERANCE_S:
        return False
    offered = [s.split(",", 1)[1].encode() for s in signatures.split() if s.startswith("v1,")]
    valid = False
    for secret in secrets:
        expected = signing.signature(secret, msg_id, stamp, raw)
        for candidate in offered:
            valid |= hmac.compare_digest(candidate, expected)
    return valid


def require_api_token():
    """A blueprint's ``before_request``: the ``/api`` routes need
    ``Authorization: Token <ANNOSYNC_API_TOKEN>`` (a JSON 401 otherwise)."""
    token = current_app.config["RUNTIME"].settings.api_token
    if not api_token_matches(request, token):
        return error(401, "unauthorized", "expected Authorization: Token <ANNOSYNC_API_TOKEN>")
    return None
