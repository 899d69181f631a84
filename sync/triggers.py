"""CI retraining triggers: tell a CI system that a project's dataset changed enough, naming
the pinned generation it should train on.

After each generation (and on every sweep) each trigger watching the project compares the
newest generation with the one it last announced: tasks added, changed and deleted (in its
splits). It fires when at least ``min_changes`` tasks changed, or ``max_delay_s`` after it
first saw a change it has not announced, but never twice within ``min_interval_s``.

Delivery is an outbox: the event is recorded in the database in the same transaction that
moves the trigger forward, then sent by a job; a failure is retried with a back-off from
seconds to a day (``BACKOFF_S``), a 410 disables the endpoint, every attempt is kept. A
worker killed mid-send leaves its claim to expire and the sweep sends it again: a receiver
may see a delivery twice (same ``webhook-id``), never zero times.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rq import Queue
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from config.triggers import Trigger
from sync import generations, materialise, outbound, targets
from sync.models import (
    Generation,
    TriggerAttempt,
    TriggerDelivery,
    TriggerEndpoint,
    TriggerState,
)
from sync.runtime import Runtime, current_runtime

log = logging.getLogger("annosync.triggers")
BACKOFF_S = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400)
CLAIM_S = 120  # longer than a request can take (connect + read timeouts)
ANNOTATION_DIFF_LIMIT = 2000  # changed tasks whose files are read to count annotations


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


# -- deciding ----------------------------------------------------------------------------


def consider(rt: Runtime, project_id: int) -> list[int]:
    """Fire every trigger of ``project_id`` that is due; the ids of the deliveries queued."""
    fired = []
    for trigger in rt.settings.triggers:
        if trigger.watches(project_id):
            delivery = _evaluate(rt, trigger, project_id)
            if delivery is not None:
                fired.append(delivery)
                _queue_send(rt, delivery)
    return fired


def _evaluate(rt: Runtime, trigger: Trigger, project_id: int) -> int | None:
    now = _now()
    with rt.sessions() as session:
        latest = session.scalar(
            select(Generation)
            .where(Generation.project_id == project_id, Generation.expired_at.is_(None))
            .order_by(Generation.number.desc())
            .limit(1)
        )
        state = session.get(TriggerState, (trigger.name, project_id))
        if state is None:
            state = TriggerState(trigger=trigger.name, project_id=project_id, version=0)
            session.add(state)
            session.flush()
        if latest is None or state.announced_generation == latest.number:
            return None
        if session.get(TriggerEndpoint, trigger.name) is not None:  # disabled by a 410
            session.commit()
            return None
        diff, ids = _task_changes(
            rt.storage, project_id, state.announced_generation, latest, trigger
        )
        tasks = {change: len(ids[change]) for change in ids}
        changed = sum(tasks.values())
        if not changed:
            state.first_unsent_at = None
            session.commit()
            return None
        state.first_unsent_at = _aware(state.first_unsent_at) or now
        waited = (now - state.first_unsent_at).total_seconds()
        due = changed >= trigger.min_changes or 0 < trigger.max_delay_s <= waited
        last = _aware(state.last_sent_at)
        if not due or (last and (now - last).total_seconds() < trigger.min_interval_s):
            session.commit()
            return None
        # Annotations are counted from the changed tasks' files: only for a message sent,
        # never on the sweeps that find a trigger not due yet.
        annotations = materialise.annotation_changes(
            rt.storage, project_id, diff, ids, ANNOTATION_DIFF_LIMIT
        )
        changes = {"tasks": tasks, "annotations": annotations}
        return _fire(rt, session, trigger, state, latest, changes, now)


def _fire(rt, session: Session, trigger, state, latest: Generation, changes, now) -> int | None:
    version = state.version
    moved = session.execute(
        update(TriggerState)
        .where(
            TriggerState.trigger == trigger.name,
            TriggerState.project_id == latest.project_id,
            TriggerState.version == version,
        )
        .values(
            announced_generation=latest.number,
            last_sent_at=now,
            first_unsent_at=None,
            version=version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # another worker fired it meanwhile
        session.rollback()
        return None
    event = _event(rt, latest, state.announced_generation, changes, now)
    row = TriggerDelivery(
        trigger=trigger.name,
        project_id=latest.project_id,
        generation=latest.number,
        previous_generation=state.announced_generation,
        msg_id="msg_" + uuid.uuid4().hex,
        body=orjson.dumps(event),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    latest.announced_at = now  # retention keeps announced generations longer
    session.commit()
    log.info(
        "trigger %s: project %s generation %s announced (%s tasks changed)",
        trigger.name, latest.project_id, latest.number, sum(changes["tasks"].values()),
    )  # fmt: skip
    return row.id


def _task_changes(storage, project_id: int, announced: int | None, latest, trigger):
    """The diff from the announced generation (from nothing when there is none, or it has
    expired) to the latest, and the task ids added, changed and deleted in the trigger's
    splits."""
    known = {e["generation"] for e in materialise.read_index(storage, project_id)}
    base = announced if announced in known else None
    diff = materialise.diff(storage, project_id, base, latest.number)
    ids: dict[str, list[int]] = {"added": [], "changed": [], "deleted": []}
    for split, by_change in diff.tasks.items():
        if trigger.splits is None or split in trigger.splits:
            for change, task_ids in by_change.items():
                ids[change] += task_ids
    return diff, ids


def _event(rt, latest: Generation, previous: int | None, changes, now) -> dict[str, Any]:
    return {
        "type": "dataset.updated",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": {
            "project": latest.project_id,
            "generation": latest.number,
            "previous_generation": previous,
            "changes": changes,
            "counts": {"tasks": latest.tasks, "annotations": latest.annotations},
            "manifest": {
                "key": generations.manifest_key(latest.project_id, latest.number),
                "sha256": latest.manifest_sha256,
            },
            "bucket": rt.settings.storage_url,
        },
    }


# -- sending -----------------------------------------------------------------------------


def _queue_send(rt: Runtime, delivery_id: int) -> None:
    Queue(rt.settings.queue_name, connection=rt.worker_redis).enqueue(
        send_job, delivery_id, job_timeout=CLAIM_S, result_ttl=60
    )


def send_job(delivery_id: int) -> str:
    """RQ job: send one trigger delivery if it is due."""
    return send(current_runtime(), delivery_id)


def send(rt: Runtime, delivery_id: int) -> str:
    """Claim the delivery, send it, record the attempt; returns its new status."""
    now = _now()
    by_name = {t.name: t for t in rt.settings.triggers}
    with rt.sessions() as session:
        claimed = session.execute(
            update(TriggerDelivery)
            .where(
                TriggerDelivery.id == delivery_id,
                TriggerDelivery.status == "pending",
                TriggerDelivery.next_attempt_at <= now,
            )
            .values(status="sending", claimed_until=now + timedelta(seconds=CLAIM_S))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:
            return "not due"
        row = session.get(TriggerDelivery, delivery_id)
        trigger = by_name.get(row.trigger)
        if trigger is None:
            return _settle(session, row, now, None, "no such trigger in the settings", final=True)
        body, headers = targets.target(trigger.target).request(
            trigger, orjson.loads(row.body), row.msg_id, int(now.timestamp())
        )
        try:
            answer = outbound.post(trigger.url, body, headers, rt.settings.trigger_allow_private)
        except outbound.ForbiddenAddress as exc:
            return _settle(session, row, now, None, str(exc), final=True)
        except outbound.OutboundError as exc:
            return _settle(session, row, now, None, str(exc))
        if answer.status == 410:  # the receiver says: gone for good
            session.merge(TriggerEndpoint(trigger=trigger.name, disabled_at=now, reason="410"))
            return _settle(session, row, now, 410, "410 Gone: endpoint disabled", final=True)
        error = None if 200 <= answer.status < 300 else answer.body[:300].decode("utf-8", "replace")
        return _settle(session, row, now, answer.status, error, elapsed=answer.elapsed_ms)


def _settle(session, row, now, status, error, final=False, elapsed=None) -> str:
    row.attempts += 1
    row.last_status, row.last_error, row.claimed_until = status, error, None
    session.add(
        TriggerAttempt(
            delivery_id=row.id, at=now, status_code=status, error=error, elapsed_ms=elapsed
        )
    )
    if error is None:
        row.status, row.delivered_at = "delivered", now
    elif final:
        row.status = "disabled" if status == 410 else "failed"
    elif row.attempts > len(BACKOFF_S):
        row.status = "failed"
    else:
        row.status = "pending"
        row.next_attempt_at = now + timedelta(seconds=BACKOFF_S[row.attempts - 1])
    session.commit()
    log.info("trigger delivery %s: %s (%s)", row.id, row.status, error or status)
    return row.status


# -- the sweep, the CLI ------------------------------------------------------------------


def sweep(rt: Runtime) -> int:
    """Send what is due (retries, claims of killed workers) and fire triggers that became
    due with time; how many deliveries were queued."""
    if not rt.settings.triggers:
        return 0
    now = _now()
    with rt.sessions() as session:
        session.execute(
            update(TriggerDelivery)
            .where(TriggerDelivery.status == "sending", TriggerDelivery.claimed_until < now)
            .values(status="pending", claimed_until=None)
        )
        session.commit()
        due = list(
            session.scalars(
                select(TriggerDelivery.id)
                .where(TriggerDelivery.status == "pending", TriggerDelivery.next_attempt_at <= now)
                .order_by(TriggerDelivery.id)
                .limit(100)
            )
        )
        projects = set(session.scalars(select(Generation.project_id).distinct()))
    for delivery_id in due:
        _queue_send(rt, delivery_id)
    return len(due) + sum(len(consider(rt, project_id)) for project_id in sorted(projects))


def deliveries(session: Session, project_id: int | None, limit: int = 50) -> list[dict]:
    """The newest trigger deliveries with their attempts."""
    query = select(TriggerDelivery).order_by(TriggerDelivery.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(TriggerDelivery.project_id == project_id)
    rows = list(session.scalars(query))
    attempts: dict[int, list] = {row.id: [] for row in rows}
    if rows:
        for a in session.scalars(
            select(TriggerAttempt)
            .where(TriggerAttempt.delivery_id.in_(attempts))
            .order_by(TriggerAttempt.id)
        ):
            attempts[a.delivery_id].append(
                {"at": _stamp(a.at), "status": a.status_code, "error": a.error}
            )
    return [_listing(row, attempts[row.id]) for row in rows]


def _stamp(moment: datetime | None) -> str | None:
    return _aware(moment).isoformat().replace("+00:00", "Z") if moment else None


def _listing(row: TriggerDelivery, attempts: list) -> dict:
    return {
        "id": row.id,
        "trigger": row.trigger,
        "project": row.project_id,
        "generation": row.generation,
        "status": row.status,
        "attempts": attempts,
        "next_attempt_at": _stamp(row.next_attempt_at) if row.status == "pending" else None,
        "webhook_id": row.msg_id,
    }


def replay(rt: Runtime, delivery_id: int) -> bool:
    """Send a delivery again now, whatever its state (a 410-disabled endpoint is enabled
    again: the operator asked); False when there is no such delivery."""
    with rt.sessions() as session:
        row = session.get(TriggerDelivery, delivery_id)
        if row is None:
            return False
        session.execute(delete(TriggerEndpoint).where(TriggerEndpoint.trigger == row.trigger))
        row.status, row.next_attempt_at, row.claimed_until = "pending", _now(), None
        session.commit()
    _queue_send(rt, delivery_id)
    return True


def pending_count(session: Session) -> int:
    return session.scalar(
        select(func.count()).where(TriggerDelivery.status.in_(("pending", "sending")))
    )
