"""Group commit: concurrent deliveries share a transaction; a lone one is not held back."""

from __future__ import annotations

import threading
import time

from sync import inbox, recorder


def _row(n: int) -> dict:
    return inbox.delivery_row(
        action="ANNOTATION_UPDATED", project_id=1, body=b"{}", key=f"k{n}", status=inbox.PENDING
    )


def _recording_batches(monkeypatch) -> list[int]:
    sizes: list[int] = []
    insert = inbox.insert_many

    def counting(engine, rows, conn=None):
        sizes.append(len(rows))
        return insert(engine, rows, conn)

    monkeypatch.setattr(inbox, "insert_many", counting)
    return sizes


def test_requests_in_flight_are_waited_for_and_written_together(runtime, monkeypatch):
    monkeypatch.setattr(recorder, "GATHER_S", 5.0)
    sizes = _recording_batches(monkeypatch)
    rec = runtime.recorder
    results = {}

    def request(n: int) -> None:
        with rec.arriving():
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
    monkeypatch.setattr(recorder, "GATHER_S", 5.0)
    sizes = _recording_batches(monkeypatch)
    started = time.monotonic()
    with runtime.recorder.arriving():
        runtime.recorder.record(_row(1))
    assert time.monotonic() - started < 2.0
    assert sizes == [1]


def test_a_request_that_never_records_delays_the_others_at_most_the_gathering_time(
    runtime, monkeypatch
):
    monkeypatch.setattr(recorder, "GATHER_S", 0.3)
    sizes = _recording_batches(monkeypatch)
    rejected_done = threading.Event()

    def rejected() -> None:  # e.g. answered 400: arrives, never records
        with runtime.recorder.arriving():
            rejected_done.wait(5)

    other = threading.Thread(target=rejected)
    other.start()
    try:
        started = time.monotonic()
        with runtime.recorder.arriving():
            runtime.recorder.record(_row(1))
        waited = time.monotonic() - started
    finally:
        rejected_done.set()
        other.join()
    assert 0.25 <= waited < 3.0
    assert sizes == [1]
