"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    rt = current_app.config["RUNTIME"]
    checks = {
        "database": _check(lambda: _db(rt)),
        "redis": _check(rt.redis.ping),
        "storage": _check(rt.storage.check),
    }
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )


def _db(rt) -> None:
    with rt.sessions() as session:
        session.execute(text("SELECT 1"))


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"
