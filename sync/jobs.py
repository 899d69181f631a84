"""RQ jobs: drain a project's pending deliveries into the store, then write its task files.

Coalescing: the receiver asks for a drain of project P only when none is already queued
(a Redis flag), and one drain applies everything pending for P in order. A burst of a
thousand deliveries becomes a handful of jobs. One drain runs per project at a time
(a Redis lock with a short, renewed expiry, so a killed worker frees it within seconds).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from contextlib import contextmanager
from functools import partial
from typing import Any

import orjson
from redis import Redis
from rq import Queue, Retry
from sqlalchemy import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from sync import (
    backoff,
    db,
    documents,
    events,
    exports,
    generations,
    inbox,
    media,
    metrics,
    store,
    task_file,
    task_outputs,
)
from sync.errors import DatabaseUnavailable
from sync.labelstudio import LabelStudioError
from sync.limits import Limits
from sync.locks import ProjectLock
from sync.payloads import is_payloadless
from sync.pull import pull_project
from sync.runtime import Runtime, current_runtime

log = logging.getLogger("annosync.jobs")

BATCH = 500
YIELDING_BATCH = 100  # tasks written per round while other projects wait
FLAG_TTL_S = 30
LINGER_S = 0.025
STALE_S = 10.0  # pending this long: the sweep queues a drain even if one seems queued
NO_PROJECT = 0  # queue key for deliveries that name no project


def _unit(project_key: int) -> str:
    return f"drain-{project_key}"


def _job_prefix(project_key: int) -> str:
    return f"drain-{project_key}-"


def _flag(project_key: int) -> str:
    return f"annosync:drain-queued:{project_key}"


def request_drain(
    redis: Redis, queue_name: str, project_id: int | None, force: bool = False
) -> bool:
    """Queue a drain of the project unless one is already waiting (or running); True if
    queued. ``force`` queues one regardless (the sweep, for deliveries that waited too long).

    Raises RedisError when Redis cannot be reached (the delivery then waits in the inbox
    for the sweep).
    """
    key = NO_PROJECT if project_id is None else project_id
    if not redis.set(_flag(key), b"1", nx=True, ex=FLAG_TTL_S) and not force:
        return False
    if backoff.waiting(redis, _unit(key)):  # it failed just now: queued again once it waited
        redis.delete(_flag(key))
        return False
    try:
        Queue(queue_name, connection=redis).enqueue(
            drain_project,
            key,
            job_id=f"{_job_prefix(key)}{uuid.uuid4().hex}",
            job_timeout=600,
            result_ttl=60,
            failure_ttl=86400,
            retry=Retry(max=8, interval=[1, 2, 4, 8, 15, 30, 60, 120]),
        )
    except BaseException:
        redis.delete(_flag(key))
        raise
    return True


def drain_project(project_key: int) -> dict[str, Any]:
    """Apply all pending deliveries of a project, then write the task files they changed.

    The "queued" flag stays set while the drain runs, so deliveries arriving meanwhile are
    picked up by this drain instead of queueing new jobs; when the queue has nothing else
    waiting, the drain lingers a few milliseconds for more before it ends. When other jobs
    wait (other projects, aggregate rebuilds), it stops after each round and queues itself
    again behind them, so a busy project cannot starve the rest.
    """
    rt = current_runtime()
    redis = rt.worker_redis
    project_id = None if project_key == NO_PROJECT else project_key
    applied = written = 0
    step = STOP
    started = time.perf_counter()
    try:
        with ProjectLock(redis, project_key) as lock, _backing_off(redis, project_key):
            while True:
                # While the flag is set, the receiver queues no further drain of this project.
                redis.set(_flag(project_key), b"1", ex=FLAG_TTL_S)
                applied += _apply_pending(rt, project_id, lock)
                others = partial(_others_waiting, rt, project_id)
                done, finished = write_dirty_tasks(rt, project_id, lock, others)
                written += done
                redis.delete(_flag(project_key))  # new deliveries queue a drain from here on
                step = _next_step(rt, project_id) if finished else REQUEUE
                if step != CONTINUE:
                    break
            if project_id is None:
                _hand_over_dirty_tasks(rt)
    finally:
        redis.delete(_flag(project_key))  # after a failure too: the sweep may queue it again
    if applied or written:  # one line per drain: what an operator watching the log wants
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "project %s: deliveries applied %d, task files written %d, %.0f ms",
            project_key, applied, written, elapsed_ms,
        )  # fmt: skip
    if step == REQUEUE:
        request_drain(redis, rt.settings.queue_name, project_id)
    return {"project": project_key, "applied": applied, "written": written}


CONTINUE, REQUEUE, STOP = "continue", "requeue", "stop"


@contextmanager
def _backing_off(redis: Redis, project_key: int):
    """A drain that fails makes its project wait before it is queued again (1 s doubling
    to 5 min); one that succeeds clears the wait."""
    try:
        yield
    except Exception as exc:
        delay = backoff.failed(redis, _unit(project_key))
        log.warning("drain of project %s failed (%s); next try in %.0f s", project_key, exc, delay)
        raise
    backoff.succeeded(redis, _unit(project_key))


def _next_step(rt: Runtime, project_id: int | None) -> str:
    """Go on draining while deliveries keep arriving and nothing else waits in the queue;
    with other jobs waiting, queue this project again behind them."""
    deadline = time.monotonic() + LINGER_S
    while True:
        pending = _has_pending(rt, project_id)
        others = _others_waiting(rt, project_id)
        if pending:
            return REQUEUE if others else CONTINUE
        if others or time.monotonic() >= deadline:
            return STOP
        time.sleep(LINGER_S / 5)


def _others_waiting(rt: Runtime, project_id: int | None) -> bool:
    """Whether other work waits in the queue: other projects' drains, aggregate rebuilds,
    resyncs (a queued drain of this same project is not "other": yielding to it would only
    ping-pong)."""
    queue = Queue(rt.settings.queue_name, connection=rt.worker_redis)
    own = _job_prefix(NO_PROJECT if project_id is None else project_id)
    return any(not job_id.startswith(own) for job_id in queue.get_job_ids(0, 100))


def _has_pending(rt: Runtime, project_id: int | None) -> bool:
    with rt.sessions() as session:
        return bool(inbox.pending_batch(session, project_id, 1, set()))


def _hand_over_dirty_tasks(rt: Runtime) -> None:
    """Deliveries without a project (project-wide task deletes) change other projects' tasks:
    their own drains write those files, so that one writer at a time touches a task."""
    with rt.sessions() as session:
        projects = store.dirty_projects(session) - {None}
    for project_id in projects:
        request_drain(rt.worker_redis, rt.settings.queue_name, project_id)


def _apply_pending(rt: Runtime, project_id: int | None, lock) -> int:
    options = events.ApplyOptions(rt.settings.project_delete, Limits.from_settings(rt.settings))
    applied, skip = 0, set()
    with rt.sessions() as session:
        db.keep_loaded(session)
        while batch := inbox.pending_batch(session, project_id, BATCH, skip):
            pulls = [d for d in batch if _is_pull(d)]
            pushed = [d for d in batch if d not in pulls]
            applied += _apply_batch(session, pushed, options, rt.settings.max_attempts, skip)
            session.commit()  # before any network call: never hold the write lock over HTTP
            received = [d.received_at for d in pushed if d.id not in skip]
            if pulls and _pull(rt, session, project_id, pulls, skip):  # all of them, or none
                applied += len(pulls)
                received += [d.received_at for d in pulls]
            metrics.observe_applied(rt, project_id, received)
            lock.renew()
    return applied


def _is_pull(delivery: Row) -> bool:
    return len(delivery.body) < 100 and is_payloadless(orjson.loads(delivery.body))


def _pull(rt: Runtime, session: Session, project_id: int | None, pulls: list, skip) -> int:
    """Payload-less deliveries (send_payload=false): one pull of the project serves them all."""
    problem = None
    if rt.labelstudio is None:
        problem = (
            "payload-less delivery (send_payload=false): set LABEL_STUDIO_URL and "
            "LABEL_STUDIO_API_KEY so annosync can pull the state, then replay it"
        )
    elif project_id is None:
        problem = "payload-less delivery without a project: use /webhooks/label-studio/<id>"
    if problem:  # retrying cannot help: fail now, replayable after the fix
        return _fail_pulls(session, pulls, problem, 1, skip)
    try:
        pull_project(rt.labelstudio, session, project_id, Limits.from_settings(rt.settings))
    except LabelStudioError as exc:
        session.rollback()
        log.warning("project %s: pull failed: %s", project_id, exc)
        return _fail_pulls(session, pulls, str(exc), rt.settings.max_attempts, skip)
    inbox.mark_applied(session, [delivery.id for delivery in pulls])
    session.commit()
    return len(pulls)


def _fail_pulls(session: Session, pulls: list, error: str, max_attempts: int, skip) -> int:
    for delivery in pulls:
        inbox.mark_attempt_failed(session, delivery.id, error, max_attempts)
        skip.add(delivery.id)
    session.commit()
    return 0


def _apply_batch(session: Session, batch: list, options, max_attempts: int, skip) -> int:
    """Apply a batch in one go; if any delivery fails, start the batch again with a
    savepoint per delivery, so the bad one fails alone. Returns how many were applied."""
    if not batch:
        return 0
    db.begin_writing(session)
    try:
        bodies = [orjson.loads(delivery.body) for delivery in batch]
        store.preload(session, bodies)
        for delivery, body in zip(batch, bodies, strict=True):
            events.apply(session, body, delivery.project_id, options, delivery.id)
        session.flush()
        inbox.mark_applied(session, [delivery.id for delivery in batch])
        return len(batch)
    except DatabaseUnavailable:
        raise  # the database itself is in trouble: let RQ retry the whole job
    except Exception as exc:
        log.info("a delivery of the batch failed (%s); applying one at a time", _describe(exc))
        session.rollback()
    finally:
        store.forget_preload(session)
    db.begin_writing(session)
    applied = 0
    for delivery in batch:
        if _apply_one(session, delivery, options, max_attempts):
            applied += 1
        else:
            skip.add(delivery.id)
    return applied


def _apply_one(session: Session, delivery: Row, options, max_attempts: int) -> bool:
    savepoint = session.begin_nested()
    try:
        body = orjson.loads(delivery.body)
        events.apply(session, body, delivery.project_id, options, delivery.id)
        inbox.mark_applied(session, [delivery.id])
        savepoint.commit()
        return True
    except DatabaseUnavailable:
        raise  # the database itself is in trouble: let RQ retry the whole job
    except Exception as exc:  # one bad delivery must not block the others
        savepoint.rollback()
        # A database error (a concurrent insert of the same id) may pass on a later try;
        # anything else comes from the delivery itself and would fail the same way again.
        attempts = max_attempts if isinstance(exc, SQLAlchemyError) else 1
        status = inbox.mark_attempt_failed(session, delivery.id, _describe(exc), attempts)
        log.warning(
            "delivery %s (%s) not applied, now %s: %s",
            delivery.id,
            delivery.action,
            status,
            _describe(exc),
        )
        return False


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def write_dirty_tasks(
    rt: Runtime, project_id: int | None, lock=None, others_waiting=None
) -> tuple[int, bool]:
    """Write (or delete) the storage object of every task that changed, and its per-task
    export outputs; returns the count and whether all are written.

    ``others_waiting`` (a callable) is asked between batches: while other projects wait,
    batches are small and the function returns after one, so a big import never holds the
    worker for long (the caller queues the rest behind the others).

    A storage failure raises StorageError with the tasks still dirty, so a retry (or the
    sweep) writes them later: nothing is lost.
    """
    written, finished, rendered_all = 0, True, False
    with rt.sessions() as session:
        if project_id is not None and exports.needs_full_rebuild(session, project_id):
            # Every live task's outputs are rendered from the state the loop below writes
            # (the caller holds the project's drain lock): the loop then writes task files
            # only, instead of rendering the dirty tasks twice (a first import: all of them).
            task_outputs.rebuild_project(rt, project_id)
            written, rendered_all = -1, True  # aggregates are owed even if no file changes
        # A drain job writes YIELDING_BATCH tasks at a time and asks after each batch
        # whether other projects wait: another project's delivery arriving mid-drain then
        # waits for one small batch (~0.3 s with three formats), never for a big one (500
        # tasks take ~2 s). The CLI and the sweep's callers, which nobody waits on, take BATCH.
        asked = others_waiting is not None
        batch = YIELDING_BATCH if asked else BATCH
        while tasks := store.dirty_tasks(session, project_id, batch):
            live = [t for t in tasks if not t.deleted]
            annotations = documents.live_annotations(session, [t.id for t in live])
            docs = [documents.task_document(t, annotations[t.id]) for t in live]
            rendered = [(doc, task_file.encode_task(doc)) for doc in docs]
            gone = [t.id for t in tasks if t.deleted]
            outputs = None
            if project_id is not None and not rendered_all:
                outputs = task_outputs.render_tasks(rt, session, project_id, rendered, gone)
            # Storage first (task files and export files made durable together), then the
            # database: its write lock is held only for the statements (task_outputs.TaskOutputs).
            files = [(documents.task_key(d["id"]), raw) for d, raw in rendered]
            writes = files + (outputs.writes if outputs else [])
            copies, objects = generations.objects_to_write(session, rt.settings, project_id, writes)
            rt.storage.put_many(writes)
            rt.storage.copy_many(copies)
            for task_id in gone:
                rt.storage.delete(documents.task_key(task_id))
            if outputs is not None:
                outputs.delete_stale(rt.storage)
                outputs.record(session)
                media.note_tasks(rt, session, project_id, docs, gone)
            generations.record_objects(session, objects)
            digests = {d["id"]: hashlib.sha256(raw).hexdigest() for d, raw in rendered}
            store.mark_written(session, [(t.id, t.version, digests.get(t.id)) for t in tasks])
            session.commit()
            written = max(written, 0) + len(tasks)
            if lock is not None:
                lock.renew()
            if asked and others_waiting():
                finished = not store.dirty_tasks(session, project_id, 1)
                break
    if written and project_id is not None:
        exports.request_aggregates(rt.worker_redis, rt.settings, project_id)
    return max(written, 0), finished
