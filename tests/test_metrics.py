"""`GET /metrics`: read before and after deliveries, a failure and a Redis outage, the
expected series move (Prometheus text format, parsed with prometheus-client's parser)."""

from __future__ import annotations

import time

import pytest
from conftest import Receiver, delivery, make_settings, run_worker
from prometheus_client.parser import text_string_to_metric_families

from sync import exports, inbox
from sync.models import MediaFile
from sync.runtime import Runtime, set_runtime
from sync.storage import StorageError, UnsafeKeyError


def _scrape(receiver: Receiver) -> dict[tuple[str, tuple], float]:
    answer = receiver.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _get(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_follow_deliveries_failures_and_exports(tmp_path, database_url, redis_url):
    rt = Runtime(make_settings(tmp_path, database_url, redis_url))
    set_runtime(rt)
    receiver = Receiver(rt)
    try:
        before = _scrape(receiver)
        assert _get(before, "annosync_state_up") == 1 and _get(before, "annosync_redis_up") == 1
        assert _get(before, "annosync_pending_deliveries", project="1") is None

        for name in ("01-TASKS_CREATED", "03-ANNOTATION_CREATED"):
            assert receiver.post(delivery(name)).status_code == 202
        stranger = receiver.http.post(
            receiver.base + "/webhooks/label-studio", data=b"{}", timeout=5
        )
        assert stranger.status_code == 401
        time.sleep(0.05)
        waiting = _scrape(receiver)
        assert _get(waiting, "annosync_pending_deliveries", project="1") == 2
        assert _get(waiting, "annosync_oldest_pending_delivery_age_seconds", project="1") > 0
        received = "annosync_deliveries_received_total"
        assert _get(waiting, received, action="TASKS_CREATED", answer="202") == 1
        assert _get(waiting, received, action="ANNOTATION_CREATED", answer="202") == 1
        assert _get(waiting, received, action="-", answer="401") == 1

        run_worker(rt)
        inbox.record(rt.engine, action="ANNOTATION_UPDATED", project_id=1, body=b"{}",
                     key="broken", status="failed")  # fmt: skip
        with rt.sessions() as session:  # an image that failed once, one not tried yet
            for task_id, attempts in ((1, 1), (3, 0)):
                session.add(MediaFile(task_id=task_id, project_id=1, url="http://x/a.png",
                                      keys="[]", written="[]", status="owed", due_at=0.0,
                                      attempts=attempts))  # fmt: skip
            session.commit()
        after = _scrape(receiver)
        assert _get(after, "annosync_media_owed", project="1", state="retrying") == 1
        assert _get(after, "annosync_media_owed", project="1", state="new") == 1
        assert _get(after, "annosync_pending_deliveries", project="1") is None
        assert _get(after, "annosync_deliveries_applied_total", project="1") == 2
        assert _get(after, "annosync_failed_deliveries", project="1") == 1
        assert _get(after, "annosync_export_generation", project="1") >= 1
        assert _get(after, "annosync_export_changes_owed", project="1") == 0
        latency = "annosync_apply_latency_seconds"  # shared by the session's tests: a delta
        applied = _get(after, f"{latency}_count") - (_get(waiting, f"{latency}_count") or 0)
        assert applied == 2
        assert _get(after, f"{latency}_sum") > (_get(waiting, f"{latency}_sum") or 0)
        assert _get(after, f"{latency}_bucket", le="+Inf") == _get(after, f"{latency}_count")
        assert not [key for key, _value in after.items() if "task" in dict(key[1])]  # bounded
    finally:
        receiver.close()
        set_runtime(None)


def test_metrics_answer_through_a_redis_outage(tmp_path, sqlite_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, "redis://127.0.0.1:9/0"))  # nobody there
    receiver = Receiver(rt)
    try:
        samples = _scrape(receiver)
        assert _get(samples, "annosync_redis_up") == 0
        assert _get(samples, "annosync_state_up") == 1
        assert _get(samples, "annosync_workers") is None
    finally:
        receiver.close()


def test_export_lag_grows_until_the_aggregates_are_written(tmp_path, sqlite_url, redis_url):
    # A long debounce: the drain writes the task files, the aggregates wait (not run here).
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, export_debounce_ms=600_000))
    set_runtime(rt)
    receiver = Receiver(rt)
    try:
        assert receiver.post(delivery("01-TASKS_CREATED")).status_code == 202
        run_worker(rt)
        time.sleep(0.2)
        owed = _scrape(receiver)
        assert _get(owed, "annosync_export_changes_owed", project="1") > 0
        assert _get(owed, "annosync_export_lag_seconds", project="1") >= 0.2
        exports.write_aggregates(rt, 1)
        final = _scrape(receiver)
        assert _get(final, "annosync_export_changes_owed", project="1") == 0
        assert _get(final, "annosync_export_lag_seconds", project="1") == 0
    finally:
        receiver.close()
        set_runtime(None)


def test_storage_errors_are_counted_by_operation(tmp_path, sqlite_url, redis_url, s3_endpoint):
    # A bucket that does not exist: every operation fails at the S3 server (over HTTP).
    missing = {"storage_url": "s3://no-such-bucket/p", "s3_endpoint_url": s3_endpoint}
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, **missing))
    receiver = Receiver(rt)
    try:
        before = _scrape(receiver)
        with pytest.raises(StorageError):
            rt.storage.put("tasks/1.json", b"{}")
        with pytest.raises(StorageError):
            list(rt.storage.list_digests("tasks/"))
        with pytest.raises(UnsafeKeyError):  # the caller's mistake, not the storage's
            rt.storage.put("../escape", b"{}")
        ready = receiver.get("/readyz")
        after = _scrape(receiver)
    finally:
        receiver.close()
    assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("error")

    def grown(operation: str) -> float:
        name = "annosync_storage_errors_total"
        return _get(after, name, operation=operation) - _get(before, name, operation=operation)

    assert grown("put") == 1  # the refused key is not counted
    assert grown("list_digests") == 1
    assert grown("check") == 1  # the readiness probe's
    assert grown("get") == 0
