"""Whether a process can do its work: the database, Redis and the storage each answer."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text

from sync.runtime import Runtime


def checks(rt: Runtime) -> dict[str, str]:
    """``ok`` or ``error: <kind>`` for each service (the kind only: messages may hold
    addresses and credentials)."""
    return {
        "database": _probe(lambda: _select_one(rt)),
        "redis": _probe(rt.redis.ping),
        "storage": _probe(rt.storage.check),
    }


def _select_one(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _probe(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; its kind is reported
        return f"error: {type(exc).__name__}"
    return "ok"
