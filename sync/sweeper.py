"""The sweep: queue again whatever the inbox and the store say is still owed.

This is what makes a Redis outage or a killed worker harmless: the inbox and the dirty
flags say what is owed, and every worker's sweep asks for it again (a unit that just failed
waits out its backoff first). It also queues the scheduled reconciliations.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from rq import Queue, Retry

from sync import exports, inbox, jobs, store, triggers
from sync.errors import Unavailable
from sync.reconcile import resync_project
from sync.runtime import Runtime, current_runtime
from sync.storage import StorageError

log = logging.getLogger("annosync.jobs")


def sweep(rt: Runtime, min_age_s: float = 1.0) -> int:
    """Queue drains for projects with deliveries or task files still owed; returns how many.

    This is what makes a Redis outage or a killed worker harmless: the inbox and the dirty
    flags say what is owed, and the sweep asks for it again.
    """
    with rt.sessions() as session:
        projects = set(inbox.projects_with_pending(session, older_than_s=min_age_s))
        projects |= store.dirty_projects(session)
        stale = set(inbox.projects_with_pending(session, older_than_s=jobs.STALE_S))
        owing = exports.projects_owing_aggregates(session)
    queued = 0
    for project_id in projects:
        try:
            queued += jobs.request_drain(
                rt.worker_redis, rt.settings.queue_name, project_id, force=project_id in stale
            )
        except RedisError as exc:
            log.warning("sweep: cannot queue project %s: %s", project_id, exc)
            return queued
    for project_id in owing:  # aggregate rebuilds lost with a queue or a killed worker
        try:
            exports.request_aggregates(rt.worker_redis, rt.settings, project_id)
        except RedisError as exc:
            log.warning("sweep: cannot queue exports of project %s: %s", project_id, exc)
            break
    return queued


def resync_job(project_id: int) -> str:
    """Scheduled reconciliation of one project (from Label Studio too, when configured)."""
    rt = current_runtime()
    summary = resync_project(rt, project_id, from_labelstudio=rt.labelstudio is not None)
    log.info("scheduled resync: %s", summary.line())
    return summary.line()


def schedule_resyncs(rt: Runtime) -> int:
    """Queue a resync of every project whose last one is older than the interval."""
    interval = rt.settings.resync_interval_s
    if not interval:
        return 0
    with rt.sessions() as session:
        projects = store.known_projects(session)
    queue = Queue(rt.settings.queue_name, connection=rt.worker_redis)
    queued = 0
    for project_id in projects:
        if rt.worker_redis.set(
            f"annosync:resync-due:{project_id}", b"1", nx=True, ex=max(1, int(interval))
        ):
            queue.enqueue(
                resync_job,
                project_id,
                job_timeout=3600,
                result_ttl=3600,
                retry=Retry(max=3, interval=[30, 120, 600]),
            )
            queued += 1
    return queued


PRUNE_EVERY_S = 600  # one worker of the instance prunes the inbox this often
PRUNE_BATCHES = 10  # at most this many batches of 10,000 per round: short transactions


def prune_inbox(rt: Runtime, now: datetime | None = None) -> int:
    """Delete the applied and ignored deliveries older than ``ANNOSYNC_INBOX_KEEP_HOURS``
    (one worker per round, every ``PRUNE_EVERY_S``); how many."""
    hours = rt.settings.inbox_keep_hours
    key = f"annosync:inbox-pruned:{rt.settings.queue_name}"
    if not hours or not rt.worker_redis.set(key, b"1", nx=True, ex=PRUNE_EVERY_S):
        return 0
    older_than = (now or datetime.now(UTC)) - timedelta(hours=hours)
    pruned = 0
    for _ in range(PRUNE_BATCHES):
        with rt.sessions() as session:
            deleted = inbox.prune(session, older_than)
            session.commit()
        pruned += deleted
        if deleted < inbox.PRUNE_BATCH:
            break
    if pruned:
        log.info("inbox: %s deliveries older than %s h removed", pruned, hours)
    return pruned


def sweep_forever(rt: Runtime, stop) -> None:
    """Run :func:`sweep` every ``ANNOSYNC_SWEEP_INTERVAL_S`` until ``stop`` is set, queue the
    periodic resyncs that are due, and the trigger deliveries and triggers that are due."""
    while not stop.wait(rt.settings.sweep_interval_s):
        try:
            sweep(rt)
            schedule_resyncs(rt)
            triggers.sweep(rt)
            prune_inbox(rt)
        except (Unavailable, StorageError, RedisError) as exc:
            log.warning("sweep failed, will retry: %s", exc)
        except Exception:
            log.exception("sweep failed")
            time.sleep(1)
