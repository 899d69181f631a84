"""What a process needs to do its work: settings, database sessions, Redis, storage."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, SettingsError, load_settings
from sync.db import make_engine, session_factory
from sync.exporters import exporter_names
from sync.labelstudio import LabelStudioClient
from sync.storage import StorageBackend, open_storage
from sync.storage.observed import ObservedStorage


@dataclass
class Runtime:
    """Shared handles, built once per process from the settings."""

    settings: Settings
    _overrides: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        unknown = [f for f in self.settings.export_formats if f not in exporter_names()]
        if unknown:
            raise SettingsError(
                f"ANNOSYNC_EXPORT_FORMATS: unknown format {unknown[0]!r}; "
                f"known: {', '.join(exporter_names())}"
            )

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings.database_url)

    @cached_property
    def redis(self) -> Redis:
        """A client that fails fast: the receiver must answer even when Redis is down."""
        return Redis.from_url(
            self.settings.redis_url,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            health_check_interval=30,
        )

    @cached_property
    def worker_redis(self) -> Redis:
        """A client for blocking queue reads (no short socket timeout)."""
        return Redis.from_url(self.settings.redis_url, socket_connect_timeout=2.0)

    @cached_property
    def labelstudio(self) -> LabelStudioClient | None:
        """The Label Studio API client, when LABEL_STUDIO_URL and the key are set."""
        if not (self.settings.label_studio_url and self.settings.label_studio_api_key):
            return None
        return LabelStudioClient(self.settings.label_studio_url, self.settings.label_studio_api_key)

    @cached_property
    def storage(self) -> StorageBackend:
        """The target storage; its failures are counted by operation for the metrics."""
        settings = self.settings
        backend = open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
        return ObservedStorage(backend, self._count_storage_error)

    def metrics_key(self, name: str) -> str:
        """The Redis key of one of the instance's shared counters (one per queue name)."""
        return f"annosync:metrics:{self.settings.queue_name}:{name}"

    def _count_storage_error(self, operation: str) -> None:
        # best effort: a Redis outage loses the count, never the error itself
        with suppress(RedisError):
            self.redis.hincrby(self.metrics_key("storage-errors"), operation, 1)


_current: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    """Use ``runtime`` for the jobs run in this process (a worker sets it at start)."""
    global _current
    _current = runtime


def current_runtime() -> Runtime:
    """The process's runtime (RQ job functions receive ids only), built from the
    environment on first use."""
    global _current
    if _current is None:
        _current = Runtime(load_settings())
    return _current
