"""One writer per project at a time, across processes and machines.

A Redis lock with a short expiry that its holder renews while it works: a worker killed
mid-job frees the project within seconds, not minutes.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import LockError

from sync.errors import Busy

log = logging.getLogger("annosync.locks")
LOCK_TTL_S = 20


class ProjectBusy(Busy):
    """Another process holds the project's lock for longer than we may wait."""


class ProjectLock:
    """``with ProjectLock(redis, 7) as lock: … lock.renew() …``; ``purpose`` names
    independent locks of one project (``drain``: who writes its tasks; ``export``: who
    rebuilds its aggregates)."""

    def __init__(
        self,
        redis: Redis,
        project_key: int,
        wait_s: float = LOCK_TTL_S + 5,
        ttl_s: int = LOCK_TTL_S,
        purpose: str = "drain",
    ) -> None:
        self.project_key, self.wait_s, self.ttl_s = project_key, wait_s, ttl_s
        self._lock = redis.lock(f"annosync:{purpose}-lock:{project_key}", timeout=ttl_s)

    def __enter__(self) -> ProjectLock:
        if not self._lock.acquire(blocking=True, blocking_timeout=self.wait_s):
            raise ProjectBusy(
                f"project {self.project_key} is busy (another worker holds its lock); try again"
            )
        return self

    def renew(self) -> None:
        """Push the expiry back: call at least every ``ttl_s`` seconds while working."""
        self._lock.extend(self.ttl_s, replace_ttl=True)

    def __exit__(self, *_exc) -> None:
        try:
            self._lock.release()
        except LockError:
            log.warning("project %s: lock expired before release", self.project_key)
