"""Exponential backoff per unit of work (a project's drain, its export rebuild).

The sweep re-queues whatever is owed every few seconds, which is what makes lost jobs and
outages harmless; without a backoff it would also re-run a failing drain every few seconds,
forever (one traceback per sweep). After each failure the unit waits 1, 2, 4 … seconds, up
to ``CEILING_S``, before anything queues it again; a success resets it. The state is in
Redis, so every worker and receiver honours it.
"""

from __future__ import annotations

from redis import Redis

BASE_S = 1.0
CEILING_S = 300.0
#: How long a run of failures is remembered after the last one.
MEMORY_S = 86_400


def _keys(unit: str) -> tuple[str, str]:
    return f"annosync:backoff:{unit}", f"annosync:failures:{unit}"


def failed(redis: Redis, unit: str) -> float:
    """Count a failure of ``unit``; returns the seconds it now waits."""
    wait_key, count_key = _keys(unit)
    failures = int(redis.incr(count_key))
    redis.expire(count_key, MEMORY_S)
    delay = min(CEILING_S, BASE_S * 2 ** min(failures - 1, 32))
    redis.set(wait_key, b"1", px=int(delay * 1000))
    return delay


def succeeded(redis: Redis, unit: str) -> None:
    """Forget the failures of ``unit``."""
    redis.delete(*_keys(unit))


def waiting(redis: Redis, unit: str) -> bool:
    """Whether ``unit`` failed recently and must not be queued yet."""
    return bool(redis.exists(_keys(unit)[0]))
