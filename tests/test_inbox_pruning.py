"""The inbox does not grow for ever: applied and ignored deliveries leave it after
``ANNOSYNC_INBOX_KEEP_HOURS``; failed, rejected and pending ones stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import Receiver, delivery, make_settings, run_worker, task_file
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update

from sync import inbox, sweeper
from sync.metrics import StateCollector
from sync.models import Delivery
from sync.runtime import Runtime, set_runtime


def _aged(rt: Runtime, status: str, hours: float, key: str) -> int:
    recorded = inbox.record(rt.engine, action="ANNOTATION_UPDATED", project_id=1, body=b"{}",
                            key=key, status=status)  # fmt: skip
    when = datetime.now(UTC) - timedelta(hours=hours)
    with rt.sessions() as session:
        session.execute(
            update(Delivery).where(Delivery.id == recorded.delivery_id).values(received_at=when)
        )
        session.commit()
    return recorded.delivery_id


def _statuses(rt: Runtime) -> dict[int, str]:
    with rt.sessions() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).all())


def test_old_applied_and_ignored_deliveries_leave_the_inbox(tmp_path, database_url, redis_url):
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, inbox_keep_hours=24))
    old = {status: _aged(rt, status, 25, f"old-{status}")
           for status in ("applied", "ignored", "failed", "rejected", "pending")}  # fmt: skip
    young = _aged(rt, "applied", 23, "young")
    assert sweeper.prune_inbox(rt) == 2
    left = _statuses(rt)
    assert old["applied"] not in left and old["ignored"] not in left
    assert {left[old[s]] for s in ("failed", "rejected", "pending")} == {
        "failed", "rejected", "pending"
    }  # fmt: skip
    assert left[young] == "applied"
    _aged(rt, "applied", 25, "older-still")
    assert sweeper.prune_inbox(rt) == 0  # one round per PRUNE_EVERY_S for the instance


def test_zero_keeps_every_delivery(tmp_path, sqlite_url, redis_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, inbox_keep_hours=0))
    kept = _aged(rt, "applied", 10_000, "ancient")
    assert sweeper.prune_inbox(rt) == 0
    assert kept in _statuses(rt)


def test_a_pruned_delivery_sent_again_is_recorded_and_harmless(tmp_path, sqlite_url, redis_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, inbox_keep_hours=1))
    set_runtime(rt)
    receiver = Receiver(rt)
    try:
        newer = delivery("05-ANNOTATION_UPDATED")
        older = delivery("03-ANNOTATION_CREATED")
        for body in (older, newer):
            assert receiver.post(body).json()["status"] == "queued"
        run_worker(rt)
        before = task_file(rt, 1)
        with rt.sessions() as session:
            session.execute(
                update(Delivery).values(received_at=datetime.now(UTC) - timedelta(hours=2))
            )
            session.commit()
        assert sweeper.prune_inbox(rt) == 2
        assert _applied_total(rt) == 2  # a counter: pruning the inbox never lowers it
        assert receiver.post(older).json()["status"] == "queued"  # no longer a duplicate
        run_worker(rt)
        assert task_file(rt, 1) == before  # the older state does not come back
    finally:
        receiver.close()
        set_runtime(None)


def _applied_total(rt: Runtime) -> float | None:
    registry = CollectorRegistry()
    registry.register(StateCollector(rt))
    return registry.get_sample_value("annosync_deliveries_applied_total", {"project": "1"})
