"""Prometheus metrics read from the shared state at scrape time.

Receivers and workers are separate processes. Rather than prometheus-client's multiprocess
mode (a folder of memory-mapped files per process, cleaned up by hand), what every process
shares is read when Prometheus scrapes: the inbox and the store in the database, the RQ
workers in Redis. So any receiver answers for the whole instance, a restarted process loses
no count, and nothing is written on the hot path. What only a receiver knows (the answers it
gave) is a plain counter of that process (the receiver is one process with threads).

Labels are bounded: project ids and fixed words, never task ids. A scrape costs a handful
of grouped, indexed queries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import case, func, select

from sync.errors import AnnosyncError
from sync.models import Delivery, MediaFile, Project, TriggerAttempt
from sync.runtime import Runtime
from sync.storage.observed import OPERATIONS

#: Upper bounds (seconds) of the apply-latency buckets: webhook to task store.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def observe_applied(rt: Runtime, project_id: int | None, received: list[datetime]) -> None:
    """Count deliveries of a project just applied, and add them to the apply-latency
    histogram (recorded -> applied), kept in Redis so every worker adds to one count. (Not
    counted from the inbox: applied deliveries leave it after ANNOSYNC_INBOX_KEEP_HOURS, and
    a counter must never go down.) Best effort: a Redis outage loses these counts, never a
    delivery."""
    if not received:
        return
    now = datetime.now(UTC)
    fields: dict[str, int] = {}
    total = 0.0
    for at in received:
        seconds = max(0.0, (now - (at if at.tzinfo else at.replace(tzinfo=UTC))).total_seconds())
        total += seconds
        bound = next((b for b in LATENCY_BUCKETS if seconds <= b), None)
        field = "+Inf" if bound is None else repr(bound)
        fields[field] = fields.get(field, 0) + 1
    try:
        pipe = rt.worker_redis.pipeline(transaction=False)
        for field, count in fields.items():
            pipe.hincrby(rt.metrics_key("apply-latency"), field, count)
        pipe.hincrbyfloat(rt.metrics_key("apply-latency"), "sum", total)
        pipe.hincrby(rt.metrics_key("applied"), _project(project_id), len(received))
        pipe.execute()
    except RedisError:
        pass


def count(rt: Runtime, name: str, counts: Mapping[str, int]) -> None:
    """Add ``counts`` (label -> how many) to the shared counter ``name`` in Redis; best
    effort, like the histogram."""
    if not any(counts.values()):
        return
    try:
        pipe = rt.worker_redis.pipeline(transaction=False)
        for label, n in counts.items():
            pipe.hincrby(rt.metrics_key(name), label, n)
        pipe.execute()
    except RedisError:
        pass


def _latency(rt: Runtime) -> Iterator[Metric]:
    stored = {k.decode(): v for k, v in rt.redis.hgetall(rt.metrics_key("apply-latency")).items()}
    buckets, cumulative = [], 0
    for bound in LATENCY_BUCKETS:
        cumulative += int(stored.get(repr(bound), 0))
        buckets.append((repr(bound), cumulative))
    cumulative += int(stored.get("+Inf", 0))
    buckets.append(("+Inf", cumulative))
    yield HistogramMetricFamily(
        "annosync_apply_latency_seconds",
        "Seconds from a delivery recorded to its effects in the task store",
        buckets=buckets,
        sum_value=float(stored.get("sum", 0.0)),
    )


class StateCollector:
    """A prometheus-client collector of the instance's shared state."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("annosync_state_up", "1 when the database answered this scrape")
        try:
            with self.rt.sessions() as session:
                families = list(_deliveries(session)) + list(_exports(session))
                families += list(_media(session)) + list(_triggers(session))
        except AnnosyncError:  # the database is down: say so, do not fail the scrape
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            yield from families
        yield from _workers(self.rt)


def _project(value) -> str:
    return "none" if value is None else str(value)


def _deliveries(session) -> Iterator[Metric]:
    by_status = session.execute(
        select(Delivery.project_id, Delivery.status, func.count(), func.min(Delivery.received_at))
        .where(Delivery.status.in_(("pending", "failed")))  # indexed: applied ones not read
        .group_by(Delivery.project_id, Delivery.status)
    ).all()
    pending = GaugeMetricFamily(
        "annosync_pending_deliveries", "Deliveries recorded, not yet applied", labels=["project"]
    )
    oldest = GaugeMetricFamily(
        "annosync_oldest_pending_delivery_age_seconds",
        "Age of the oldest delivery still waiting to be applied",
        labels=["project"],
    )
    failed = GaugeMetricFamily(
        "annosync_failed_deliveries", "Deliveries that failed every attempt", labels=["project"]
    )
    now = datetime.now(UTC)
    for project_id, status, count, first in by_status:
        label = [_project(project_id)]
        if status == "pending":
            pending.add_metric(label, count)
            first = first if first.tzinfo else first.replace(tzinfo=UTC)  # SQLite drops it
            oldest.add_metric(label, max(0.0, (now - first).total_seconds()))
        else:
            failed.add_metric(label, count)
    yield from (pending, oldest, failed)


def _exports(session) -> Iterator[Metric]:
    generation = GaugeMetricFamily(
        "annosync_export_generation", "The project's export generation", labels=["project"]
    )
    owed = GaugeMetricFamily(
        "annosync_export_changes_owed",
        "Task changes the project's aggregates do not reflect yet",
        labels=["project"],
    )
    lag = GaugeMetricFamily(
        "annosync_export_lag_seconds",
        "Since the oldest change the project's exports do not reflect yet (0: all exported)",
        labels=["project"],
    )
    rows = session.execute(
        select(
            Project.id, Project.export_generation, Project.export_changes, Project.changes_since
        ).where(Project.deleted.is_(False))
    )
    now = datetime.now(UTC)
    for project_id, number, changes, since in rows:
        generation.add_metric([str(project_id)], number or 0)
        owed.add_metric([str(project_id)], changes or 0)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # SQLite drops the zone
        lag.add_metric([str(project_id)], (now - since).total_seconds() if since else 0.0)
    yield from (generation, owed, lag)


def _media(session) -> Iterator[Metric]:
    owed = GaugeMetricFamily(
        "annosync_media_owed", "Images to copy beside the labels", labels=["project", "state"]
    )
    retrying = case((MediaFile.attempts > 0, 1), else_=0).label("retrying")
    rows = session.execute(
        select(MediaFile.project_id, retrying, func.count())
        .where(MediaFile.status == "owed")
        .group_by(MediaFile.project_id, retrying)
    )
    for project_id, retrying, count in rows:
        owed.add_metric([str(project_id), "retrying" if retrying else "new"], count)
    yield owed


def _triggers(session) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "annosync_trigger_attempts", "CI trigger sends, by outcome", labels=["outcome"]
    )
    rows = session.execute(
        select(TriggerAttempt.status_code, func.count()).group_by(TriggerAttempt.status_code)
    )
    totals: dict[str, int] = {}
    for code, count in rows:
        outcome = "no_answer" if code is None else f"{code // 100}xx"
        totals[outcome] = totals.get(outcome, 0) + count
    for outcome, count in sorted(totals.items()):
        attempts.add_metric([outcome], count)
    yield attempts


MEDIA_OUTCOMES = ("fetched", "copied", "not_modified", "failed")


def _applied(rt: Runtime) -> Iterator[Metric]:
    applied = CounterMetricFamily(
        "annosync_deliveries_applied", "Deliveries applied to the store", labels=["project"]
    )
    for project, count in sorted(rt.redis.hgetall(rt.metrics_key("applied")).items()):
        applied.add_metric([project.decode()], int(count))
    yield applied


def _storage_errors(rt: Runtime) -> Iterator[Metric]:
    help_ = "Failed operations on the target storage, by operation (all processes)"
    yield _shared_counter(rt, "storage-errors", "annosync_storage_errors", help_,
                          "operation", sorted(OPERATIONS))  # fmt: skip


def _media_fetches(rt: Runtime) -> Iterator[Metric]:
    help_ = "Media fetch attempts by outcome (copied: server-side; not_modified: an ETag matched)"
    yield _shared_counter(rt, "media-fetches", "annosync_media_fetches", help_,
                          "outcome", MEDIA_OUTCOMES)  # fmt: skip


def _shared_counter(rt: Runtime, key: str, name: str, help_: str, label: str, values) -> Metric:
    """A counter that every process adds to in Redis, one series per label value
    (every value listed, 0 included, so rates start from the first scrape)."""
    family = CounterMetricFamily(name, help_, labels=[label])
    counted = rt.redis.hgetall(rt.metrics_key(key))
    for value in values:
        family.add_metric([value], int(counted.get(value.encode(), 0)))
    return family


def _workers(rt: Runtime) -> Iterator[Metric]:
    workers = GaugeMetricFamily("annosync_workers", "RQ workers registered in Redis")
    redis_up = GaugeMetricFamily("annosync_redis_up", "1 when Redis answered this scrape")
    try:
        workers.add_metric([], Worker.count(connection=rt.redis))
        latency = list(_latency(rt)) + list(_applied(rt)) + list(_storage_errors(rt))
        latency += list(_media_fetches(rt))
    except RedisError:
        redis_up.add_metric([], 0)
    else:
        redis_up.add_metric([], 1)
        yield workers
        yield from latency
    yield redis_up
