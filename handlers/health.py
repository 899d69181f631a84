"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from sync import readiness

bp = Blueprint("health", __name__)


@bp.get("/livez")
@bp.get("/healthz")  # the older name, kept
def livez():
    """The process answers (Kubernetes' liveness probe): it needs no other service."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    checks = readiness.checks(current_app.config["RUNTIME"])
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )
