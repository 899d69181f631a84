"""The receiver over real HTTP, with real Redis and SQLite/PostgreSQL."""

from __future__ import annotations

import copy

import orjson
import pytest
from conftest import Receiver, bucket, delivery, make_settings, run_worker, task_file
from rq import Queue
from sqlalchemy import func, select

from sync import sweeper
from sync.models import Delivery
from sync.runtime import Runtime


def _statuses(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(Delivery.status).order_by(Delivery.id)))


def _queued_jobs(rt: Runtime) -> int:
    return Queue(rt.settings.queue_name, connection=rt.worker_redis).count


def test_created_then_updated_produces_the_task_file(receiver, runtime):
    created, updated = delivery("03-ANNOTATION_CREATED"), delivery("05-ANNOTATION_UPDATED")
    first = receiver.post(created)
    assert first.status_code == 202
    assert first.json()["status"] == "queued"
    assert isinstance(first.json()["delivery_id"], int)
    assert receiver.post(updated).status_code == 202
    run_worker(runtime)

    doc = task_file(runtime, 1)
    assert doc["id"] == 1
    assert doc["data"] == created["task"]["data"]
    assert [a["id"] for a in doc["annotations"]] == [1]
    assert doc["annotations"][0]["result"] == updated["annotation"]["result"]
    assert doc["annotations"][0]["updated_at"] == updated["annotation"]["updated_at"]
    assert doc["total_annotations"] == 1
    # Shaped like an entry of Label Studio's JSON export: same keys, in the same order.
    assert list(doc)[:4] == ["id", "annotations", "drafts", "predictions"]
    assert "is_labeled" not in doc and "overlap" not in doc
    assert _statuses(runtime) == ["applied", "applied"]


def test_task_file_has_the_keys_of_a_label_studio_export_entry(receiver, runtime):
    from conftest import FIXTURES

    export = orjson.loads((FIXTURES / "exports" / "project-1-JSON.json").read_bytes())
    receiver.post(delivery("07-ANNOTATION_CREATED"))
    run_worker(runtime)
    doc = task_file(runtime, 1)
    assert list(doc) == list(export[0])
    assert list(doc["annotations"][0]) == list(delivery("07-ANNOTATION_CREATED")["annotation"])
    assert doc["annotations"][0]["result"] == export[0]["annotations"][0]["result"]


def test_an_older_version_never_overwrites_a_newer_one(receiver, runtime):
    created, updated = delivery("03-ANNOTATION_CREATED"), delivery("05-ANNOTATION_UPDATED")
    receiver.post(updated)
    receiver.post(created)  # arrives late
    run_worker(runtime)
    doc = task_file(runtime, 1)
    assert doc["annotations"][0]["result"] == updated["annotation"]["result"]


def test_second_annotation_is_merged_into_the_task(receiver, runtime):
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    receiver.post(delivery("07-ANNOTATION_CREATED"))
    run_worker(runtime)
    doc = task_file(runtime, 1)
    assert [a["id"] for a in doc["annotations"]] == [1, 2]
    assert doc["total_annotations"] == 2


def test_exact_duplicate_is_answered_duplicate_and_applied_once(receiver, runtime):
    body = delivery("03-ANNOTATION_CREATED")
    first = receiver.post(body).json()
    again = receiver.post(body).json()
    assert again == {"delivery_id": first["delivery_id"], "status": "duplicate"}
    assert _statuses(runtime) == ["pending"]


def test_standard_webhooks_id_is_the_delivery_key(receiver, runtime):
    body = delivery("03-ANNOTATION_CREATED")
    receiver.post(body, headers={"webhook-id": "msg_1"})
    changed = copy.deepcopy(body)
    changed["annotation"]["lead_time"] = 99
    assert receiver.post(changed, headers={"webhook-id": "msg_1"}).json()["status"] == "duplicate"


def test_unknown_action_is_accepted_and_ignored(receiver, runtime):
    response = receiver.post({"action": "LABEL_LINK_CREATED", "project": {"id": 1}})
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert _statuses(runtime) == ["ignored"]
    assert _queued_jobs(runtime) == 0


def test_secrets_are_stripped_before_recording(receiver, runtime):
    body = delivery("03-ANNOTATION_CREATED")
    body["project"]["task_data_password"] = "hunter2-password"
    receiver.post(body)
    with runtime.sessions() as session:
        stored = session.scalar(select(Delivery.body))
    assert body["project"]["token"].encode() not in stored
    assert b"hunter2-password" not in stored
    assert b"task_data_login" not in stored
    run_worker(runtime)
    raw = (bucket(runtime) / "tasks" / "1.json").read_bytes()
    assert body["project"]["token"].encode() not in raw


@pytest.mark.parametrize("secret", [None, "wrong-secret-value", ""])
def test_missing_or_wrong_secret_is_401_and_records_nothing(receiver, runtime, secret):
    response = receiver.post(delivery("03-ANNOTATION_CREATED"), secret=secret)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert _statuses(runtime) == []


def test_any_of_several_secrets_is_accepted(tmp_path, sqlite_url, redis_url):
    settings = make_settings(tmp_path, sqlite_url, redis_url)
    settings = type(settings)(
        **{**settings.__dict__, "webhook_secrets": ("old-secret-1", "new-secret-2")}
    )
    r = Receiver(Runtime(settings))
    try:
        for secret in ("old-secret-1", "new-secret-2"):
            assert r.post({"action": "X_Y"}, secret=secret).status_code == 202
        assert r.post({"action": "X_Y"}, secret="new-secret-3").status_code == 401
    finally:
        r.close()


def _assert_nothing_pending_or_written(rt: Runtime) -> None:
    assert "pending" not in _statuses(rt)
    assert _queued_jobs(rt) == 0
    assert not (bucket(rt) / "tasks").exists()


def test_wrong_content_type_is_415(receiver, runtime):
    response = receiver.post(None, raw=b"action=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    _assert_nothing_pending_or_written(runtime)


def test_non_json_is_400(receiver, runtime):
    response = receiver.post(None, raw=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    _assert_nothing_pending_or_written(runtime)


def test_oversize_body_is_413(receiver, runtime):
    limit = runtime.settings.max_body_bytes
    response = receiver.post(None, raw=b'{"action": "' + b"A" * limit + b'"}')
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    _assert_nothing_pending_or_written(runtime)


def test_schema_invalid_annotation_is_400_naming_path_and_rule(receiver, runtime):
    body = delivery("03-ANNOTATION_CREATED")
    body["annotation"]["result"] = {"not": "a list"}
    response = receiver.post(body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid_payload"
    assert {"path": "annotation.result", "rule": "type"}.items() <= answer["detail"][0].items()
    assert "is not of type 'array'" in answer["detail"][0]["message"]
    _assert_nothing_pending_or_written(runtime)
    assert _statuses(runtime) == ["rejected"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b["task"].__setitem__("id", "../../etc/passwd"), "task.id"),
        (lambda b: b["annotation"].__setitem__("id", -3), "annotation.id"),
        (lambda b: b.pop("task"), "$"),
        (
            lambda b: b["annotation"]["result"][0].__setitem__("value", "x"),
            "annotation.result[0].value",
        ),
    ],
)
def test_each_schema_problem_names_its_path(receiver, runtime, mutate, path):
    body = delivery("03-ANNOTATION_CREATED")
    mutate(body)
    response = receiver.post(body)
    assert response.status_code == 400
    assert path in [d["path"] for d in response.json()["detail"]]
    _assert_nothing_pending_or_written(runtime)


def test_redis_down_at_receive_time_still_202_and_applied_after(tmp_path, database_url, redis_url):
    dead = f"redis://127.0.0.1:{jobs_free_port()}/0"
    down = Runtime(make_settings(tmp_path, database_url, dead))
    r = Receiver(down)
    try:
        response = r.post(delivery("03-ANNOTATION_CREATED"))
    finally:
        r.close()
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert _statuses(down) == ["pending"]

    up = Runtime(make_settings(tmp_path, database_url, redis_url))
    assert sweeper.sweep(up, min_age_s=0) == 1  # the inbox, not Redis, knew what was owed
    run_worker(up)
    assert _statuses(up) == ["applied"]
    assert task_file(up, 1)["annotations"][0]["id"] == 1


def jobs_free_port() -> int:
    from sync.launcher import free_port

    return free_port()


def test_database_down_is_503_with_retry_after(tmp_path, redis_url):
    dead_db = f"postgresql://postgres@127.0.0.1:{jobs_free_port()}/test"
    token = "an-api-token-of-enough-length"
    r = Receiver(Runtime(make_settings(tmp_path, dead_db, redis_url, api_token=token)))
    try:
        response = r.post(delivery("03-ANNOTATION_CREATED"))
        status = r.get("/api/projects/1/status", headers={"Authorization": f"Token {token}"})
        ready = r.get("/readyz")
    finally:
        r.close()
    for answer in (response, status):
        assert answer.status_code == 503
        assert answer.json()["error"] == "unavailable"
        assert answer.headers["Retry-After"]
    assert ready.json()["checks"]["database"] == "error: DatabaseUnavailable"


def test_a_burst_for_one_project_becomes_a_handful_of_jobs(receiver, runtime, drain_jobs):
    base = delivery("05-ANNOTATION_UPDATED")
    for n in range(200):
        body = copy.deepcopy(base)
        body["annotation"]["updated_at"] = f"2026-11-22T00:00:{n // 10:02d}.{n:06d}Z"
        body["annotation"]["lead_time"] = n
        assert receiver.post(body).status_code == 202
    assert _queued_jobs(runtime) == 1
    run_worker(runtime)
    assert drain_jobs == [1]
    assert set(_statuses(runtime)) == {"applied"}
    assert task_file(runtime, 1)["annotations"][0]["lead_time"] == 199


def test_deliveries_for_different_projects_get_their_own_drains(receiver, runtime):
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    receiver.post(delivery("18-ANNOTATION_CREATED"))
    assert _queued_jobs(runtime) == 2
    run_worker(runtime)
    assert task_file(runtime, 1) and task_file(runtime, 4)


def test_health_and_readiness(receiver, runtime):
    assert receiver.get("/healthz").json() == {"status": "ok"}
    ready = receiver.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


def test_readiness_names_what_is_down(tmp_path, sqlite_url):
    dead = f"redis://127.0.0.1:{jobs_free_port()}/0"
    r = Receiver(Runtime(make_settings(tmp_path, sqlite_url, dead)))
    try:
        ready = r.get("/readyz")
    finally:
        r.close()
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("error")
    assert ready.json()["checks"]["database"] == "ok"


def test_unknown_route_is_json_404(receiver):
    response = receiver.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_delivery_rows_count(runtime, receiver):
    receiver.post(delivery("01-TASKS_CREATED"))
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
