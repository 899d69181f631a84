"""Group commit: concurrent deliveries share a transaction; a lone one is not held back."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from sync import db, group_commit, inbox
from sync.group_commit import GroupCommit
from sync.models import Delivery


def _row(n: int) -> dict:
    return inbox.delivery_row(
        action="ANNOTATION_UPDATED", project_id=1, body=b"{}", key=f"k{n}", status=inbox.PENDING
    )


def _recording_batches(monkeypatch) -> list[int]:
    sizes: list[int] = []
    insert = inbox.record_many

    def counting(engine, rows):
        sizes.append(len(rows))
        return insert(engine, rows)

    monkeypatch.setattr(inbox, "record_many", counting)
    return sizes


def test_requests_in_flight_are_waited_for_and_written_together(runtime, monkeypatch):
    monkeypatch.setattr(group_commit, "GATHER_S", 5.0)
    sizes = _recording_batches(monkeypatch)
    rec = GroupCommit(runtime)
    results = {}
    all_arrived = threading.Barrier(4)  # in flight together (a thread starting late is not)

    def request(n: int) -> None:
        with rec.arriving():
            all_arrived.wait(timeout=10)
            time.sleep(0.05 * n)  # still parsing and checking its delivery
            results[n] = rec.record(_row(n))

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sizes == [4]
    assert len({r.delivery_id for r in results.values()}) == 4
    assert {r.status for r in results.values()} == {inbox.PENDING}


def test_a_lone_request_is_written_at_once(runtime, monkeypatch):
    monkeypatch.setattr(group_commit, "GATHER_S", 5.0)
    sizes = _recording_batches(monkeypatch)
    rec = GroupCommit(runtime)
    started = time.monotonic()
    with rec.arriving():
        rec.record(_row(1))
    assert time.monotonic() - started < 2.0
    assert sizes == [1]


def test_a_request_that_never_records_delays_the_others_at_most_the_gathering_time(
    runtime, monkeypatch
):
    monkeypatch.setattr(group_commit, "GATHER_S", 0.3)
    sizes = _recording_batches(monkeypatch)
    rec = GroupCommit(runtime)
    rejected_arrived, rejected_done = threading.Event(), threading.Event()

    def rejected() -> None:  # e.g. answered 400: arrives, never records
        with rec.arriving():
            rejected_arrived.set()
            rejected_done.wait(5)

    other = threading.Thread(target=rejected)
    other.start()
    rejected_arrived.wait(5)
    try:
        started = time.monotonic()
        with rec.arriving():
            rec.record(_row(1))
        waited = time.monotonic() - started
    finally:
        rejected_done.set()
        other.join()
    assert 0.25 <= waited < 3.0
    assert sizes == [1]


def test_many_rows_in_one_insert_get_their_own_ids(runtime):
    engine = db.make_engine(runtime.settings.database_url)
    rows = [
        inbox.delivery_row(
            action="ANNOTATION_UPDATED",
            project_id=n % 3 or None,
            body=b'{"n": %d}' % n,
            key=None if n % 5 == 0 else f"many-{n}",
            status=inbox.PENDING,
        )
        for n in range(1, 41)
    ]
    recorded = inbox.record_many(engine, rows)
    assert len({r.delivery_id for r in recorded}) == 40
    with db.session_factory(runtime.settings.database_url)() as session:
        stored = dict(session.execute(select(Delivery.id, Delivery.body)).all())
    assert [stored[r.delivery_id] for r in recorded] == [row["body"] for row in rows]
    assert [r.project_id for r in recorded] == [row["project_id"] for row in rows]


def test_a_batch_with_a_key_recorded_before_answers_that_one_as_a_duplicate(runtime):
    engine = db.make_engine(runtime.settings.database_url)

    def row(key: str) -> dict:
        return inbox.delivery_row(
            action="ANNOTATION_UPDATED", project_id=1, body=b"{}", key=key, status=inbox.PENDING
        )

    first = inbox.record_many(engine, [row("k-1"), row("k-2")])
    again = inbox.record_many(engine, [row("k-1"), row("k-3")])
    assert [r.status for r in again] == ["duplicate", inbox.PENDING]
    assert again[0].delivery_id == first[0].delivery_id
    with db.session_factory(runtime.settings.database_url)() as session:
        statuses = dict(session.execute(select(Delivery.key, Delivery.status)).all())
    assert statuses == {"k-1": "pending", "k-2": "pending", "k-3": "pending"}
