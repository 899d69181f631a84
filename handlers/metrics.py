"""``GET /metrics``: Prometheus text format — this receiver's answers, and the instance's
shared state (see :mod:`sync.metrics`)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from sync.metrics import StateCollector
from sync.runtime import Runtime

bp = Blueprint("metrics", __name__)


def install(app: Flask, runtime: Runtime) -> None:
    """Give ``app`` its own registry (two apps in one process never share counters)."""
    registry = CollectorRegistry()
    app.config["RECEIVED"] = Counter(
        "annosync_deliveries_received",
        "Webhook deliveries this receiver answered, by action (accepted ones) and status",
        ["action", "answer"],
        registry=registry,
    )
    registry.register(StateCollector(runtime))
    app.config["METRICS"] = registry


def count_answer(action: str | None, status: int) -> None:
    """Count one answered delivery; ``action`` only for an accepted one (a validated Label
    Studio action), so a sender cannot grow the label set."""
    label = action if status == 202 and action else "-"
    current_app.config["RECEIVED"].labels(label, str(status)).inc()


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(current_app.config["METRICS"]), mimetype=CONTENT_TYPE_LATEST)
