"""Every Label Studio action, applied so the bucket mirrors the project, whatever the order."""

from __future__ import annotations

import copy
import json
import time

import orjson
import pytest
from conftest import (
    FIXTURES,
    SECRET,
    Receiver,
    bucket,
    captured_sequence,
    delivery,
    make_settings,
    run_worker,
    task_file,
)
from lsfake import FakeLabelStudio
from sqlalchemy import select

from sync import admission, sweeper
from sync.models import Delivery, Project
from sync.runtime import Runtime


def _export(project: int) -> list[dict]:
    return json.loads((FIXTURES / "exports" / f"project-{project}-JSON.json").read_text())


def _post_all(receiver, bodies) -> None:
    for _name, body in bodies:
        response = receiver.post(body)
        assert response.status_code == 202, response.text


def _task_ids(rt: Runtime) -> set[int]:
    return {int(p.stem) for p in (bucket(rt) / "tasks").glob("*.json")}


def _statuses(rt: Runtime) -> dict[int, str]:
    with rt.sessions() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).all())


def _assert_mirrors_export(rt: Runtime, project: int) -> None:
    for entry in _export(project):
        doc = task_file(rt, entry["id"])
        assert doc is not None, f"task {entry['id']} missing"
        assert doc["data"] == entry["data"]
        assert [a["id"] for a in doc["annotations"]] == [a["id"] for a in entry["annotations"]]
        for ours, theirs in zip(doc["annotations"], entry["annotations"], strict=True):
            assert ours["result"] == theirs["result"]
            assert ours["was_cancelled"] == theirs["was_cancelled"]


def test_every_captured_delivery_validates_and_applies(receiver, runtime):
    index = json.loads((FIXTURES / "webhooks" / "index.json").read_text())
    for item in index:
        body = json.loads((FIXTURES / "webhooks" / item["file"]).read_text())["body"]
        path = "/webhooks/label-studio" + ("/1" if item["path"] == "/hook-nopayload" else "")
        response = receiver.post(body, path=path)
        assert response.status_code == 202, (item["file"], response.text)
        assert response.json()["status"] == "queued"
    run_worker(runtime)
    statuses = _statuses(runtime)
    with runtime.sessions() as session:
        rows = session.execute(select(Delivery.action, Delivery.body, Delivery.status)).all()
    for action, body, status in rows:
        payloadless = orjson.loads(body).keys() == {"action"}
        # No LABEL_STUDIO_URL here: pulls fail visibly (replayable), the rest apply.
        assert status == ("failed" if payloadless else "applied"), action
    assert len(statuses) == len(index)


def test_captured_session_replays_to_a_mirror_of_the_export(receiver, runtime):
    _post_all(receiver, captured_sequence())
    run_worker(runtime)
    for project in (1, 2, 3):
        _assert_mirrors_export(runtime, project)
    # task 2 deleted; task 7 deleted; task 6 lost its annotations but still exists
    assert _task_ids(runtime) == {1, 3, 4, 5, 6}
    assert task_file(runtime, 6)["annotations"] == []
    assert task_file(runtime, 1)["total_annotations"] == 1


def test_project_update_stores_the_parsed_label_config(receiver, runtime):
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    run_worker(runtime)
    receiver.post(delivery("15-PROJECT_UPDATED"))
    run_worker(runtime)
    with runtime.sessions() as session:
        project = session.get(Project, 1)
    parsed = json.loads(project.parsed_config)
    assert project.title == delivery("15-PROJECT_UPDATED")["project"]["title"]
    assert project.config_version == 2
    bbox = next(c for c in parsed["controls"] if c["name"] == "bbox")
    assert bbox["labels"] == ["Airplane", "Car", "Truck"]
    assert bbox["to_name"] == ["image"]
    assert parsed["objects"] == [{"name": "image", "type": "Image", "value": "image"}]


def test_older_project_payload_does_not_roll_back_the_config(receiver, runtime):
    receiver.post(delivery("15-PROJECT_UPDATED"))
    receiver.post(delivery("09-ANNOTATION_CREATED"))  # carries the older project object
    run_worker(runtime)
    with runtime.sessions() as session:
        project = session.get(Project, 1)
    assert "Truck" in project.label_config


def test_deleted_annotation_is_not_resurrected_by_a_late_update(receiver, runtime):
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    receiver.post(delivery("07-ANNOTATION_CREATED"))
    receiver.post(delivery("11-ANNOTATIONS_DELETED"))
    run_worker(runtime)
    receiver.post(delivery("05-ANNOTATION_UPDATED"))  # late
    run_worker(runtime)
    assert [a["id"] for a in task_file(runtime, 1)["annotations"]] == [2]


def test_delete_before_create_leaves_a_tombstone(receiver, runtime):
    receiver.post(delivery("11-ANNOTATIONS_DELETED"))
    receiver.post(delivery("13-TASKS_DELETED"))
    run_worker(runtime)
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    receiver.post(delivery("09-ANNOTATION_CREATED"))  # annotation 3 of deleted task 2
    run_worker(runtime)
    assert task_file(runtime, 1)["annotations"] == []
    assert task_file(runtime, 2) is None


def test_a_reused_task_id_is_a_new_task(receiver, runtime):
    receiver.post(delivery("21-TASKS_CREATED"))
    receiver.post(delivery("24-TASKS_DELETED"))  # task 7
    run_worker(runtime)
    assert task_file(runtime, 7) is None
    reused = delivery("21-TASKS_CREATED")
    task = next(t for t in reused["tasks"] if t["id"] == 7)
    task["created_at"] = task["updated_at"] = "2026-11-21T23:30:00.000000Z"
    task["data"] = {"image": "http://example/new.jpg"}
    reused["tasks"] = [task]
    receiver.post(reused)
    run_worker(runtime)
    assert task_file(runtime, 7)["data"] == {"image": "http://example/new.jpg"}


def test_bulk_annotations_created(receiver, runtime):
    receiver.post(delivery("21-TASKS_CREATED"))
    receiver.post(delivery("22-ANNOTATIONS_CREATED"))
    run_worker(runtime)
    bulk = delivery("22-ANNOTATIONS_CREATED")
    for annotation in bulk["annotation"]:
        doc = task_file(runtime, annotation["task"])
        assert [a["id"] for a in doc["annotations"]] == [annotation["id"]]
        assert doc["annotations"][0]["result"] == annotation["result"]


def test_project_wide_task_delete_without_project_key(receiver, runtime):
    receiver.post(delivery("01-TASKS_CREATED"))
    run_worker(runtime)
    assert _task_ids(runtime) == {1, 2, 3}
    response = receiver.post({"action": "TASKS_DELETED", "tasks": [{"id": 1}, {"id": 3}]})
    assert response.status_code == 202
    run_worker(runtime)
    assert _task_ids(runtime) == {2}


@pytest.mark.parametrize("mode", ["delete", "keep"])
def test_project_deleted(tmp_path, sqlite_url, redis_url, mode):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, project_delete=mode))
    r = Receiver(rt)
    try:
        r.post(delivery("01-TASKS_CREATED"))
        r.post(delivery("17-TASKS_CREATED"))
        run_worker(rt)
        r.post({"action": "PROJECT_DELETED", "project": {"id": 1}})
        run_worker(rt)
    finally:
        r.close()
    assert _task_ids(rt) == ({4} if mode == "delete" else {1, 2, 3, 4})


def test_skip_is_stored_as_cancelled(receiver, runtime):
    skip = delivery("03-ANNOTATION_CREATED")
    skip["annotation"].update(was_cancelled=True, result=[])
    receiver.post(skip)
    run_worker(runtime)
    doc = task_file(runtime, 1)
    assert doc["annotations"][0]["was_cancelled"] is True
    assert (doc["total_annotations"], doc["cancelled_annotations"]) == (0, 1)


def test_legacy_completions_are_read_as_annotations(receiver, runtime):
    body = delivery("01-TASKS_CREATED")
    legacy = delivery("03-ANNOTATION_CREATED")["annotation"]
    body["tasks"][0]["completions"] = [legacy]
    receiver.post(body)
    run_worker(runtime)
    doc = task_file(runtime, 1)
    assert [a["id"] for a in doc["annotations"]] == [legacy["id"]]
    assert "completions" not in doc


def test_a_poison_delivery_fails_alone(receiver, runtime):
    poison = delivery("22-ANNOTATIONS_CREATED")
    poison["task"] = poison["task"][:1]  # the second annotation's task is missing
    receiver.post(poison)
    receiver.post(delivery("03-ANNOTATION_CREATED"))
    for _ in range(runtime.settings.max_attempts):
        run_worker(runtime)
        sweeper.sweep(runtime, min_age_s=0)
    run_worker(runtime)
    with runtime.sessions() as session:
        rows = session.execute(select(Delivery.action, Delivery.status, Delivery.last_error))
        by_action = {a: (s, e) for a, s, e in rows}
    assert by_action["ANNOTATIONS_CREATED"][0] == "failed"
    assert "not in the payload" in by_action["ANNOTATIONS_CREATED"][1]
    assert by_action["ANNOTATION_CREATED"][0] == "applied"
    assert task_file(runtime, 1) is not None


def test_five_thousand_task_import(receiver, runtime):
    template = delivery("01-TASKS_CREATED")
    task = template["tasks"][0]
    tasks = []
    for n in range(1, 5001):
        t = copy.deepcopy(task)
        t["id"], t["inner_id"] = 1000 + n, n
        t["data"] = {"image": f"http://127.0.0.1:9099/img/{n}.jpg", "external_id": f"e{n}"}
        tasks.append(t)
    template["tasks"] = tasks
    response = receiver.post(template)
    assert response.status_code == 202
    started = time.perf_counter()
    run_worker(runtime)
    elapsed = time.perf_counter() - started
    assert len(_task_ids(runtime)) == 5000
    assert task_file(runtime, 5000)["data"]["external_id"] == "e4000"
    print(f"5,000-task TASKS_CREATED applied and written in {elapsed:.2f} s")


def test_too_many_items_is_400(receiver, runtime):
    body = {"action": "TASKS_DELETED", "tasks": [{"id": n} for n in range(1, 10_002)]}
    response = receiver.post(body)
    assert response.status_code == 400
    assert response.json()["detail"][0]["rule"] == "maxItems"


def test_too_deep_is_400(receiver, runtime):
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    body = delivery("03-ANNOTATION_CREATED")
    body["task"]["data"] = deep
    response = receiver.post(body)
    assert response.status_code == 400
    assert response.json()["detail"][0]["rule"] == "maxDepth"


def test_ten_megabyte_body_is_413(receiver, runtime):
    body = delivery("01-TASKS_CREATED")
    body["tasks"][0]["data"]["blob"] = "x" * (10 * 1024 * 1024)
    response = receiver.post(body)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"action": "TASKS_DELETED"}, "$"),
        ({"action": "TASKS_DELETED", "tasks": [{"id": "7"}]}, "tasks[0].id"),
        ({"action": "TASKS_DELETED", "tasks": [{"id": 1.5}]}, "tasks[0].id"),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{}]}, "annotations[0]"),
        ({"action": "TASKS_CREATED", "tasks": {"id": 1}}, "tasks"),
        ({"action": "PROJECT_DELETED", "project": {"id": "../1"}}, "project.id"),
        ({"action": "lower_case"}, "action"),
        ({"action": 5}, "action"),
        ([1, 2], "$"),
    ],
)
def test_bad_shapes_are_400_naming_the_path(receiver, runtime, body, path):
    if body == {"action": "TASKS_DELETED"}:
        body = {"action": "TASKS_DELETED", "project": {"id": 1}}
    response = receiver.post(body)
    assert response.status_code == 400
    assert path in [d["path"] for d in response.json()["detail"]]
    assert "pending" not in _statuses(runtime).values()


def _fake_ls(token: str) -> FakeLabelStudio:
    project = copy.deepcopy(delivery("15-PROJECT_UPDATED")["project"])
    return FakeLabelStudio(token, {1: project}, {1: _export(1)})


def test_payloadless_deliveries_pull_the_project_once(tmp_path, database_url, redis_url):
    fake = _fake_ls("ls-token-123")
    rt = Runtime(
        make_settings(
            tmp_path,
            database_url,
            redis_url,
            label_studio_url=fake.url,
            label_studio_api_key="ls-token-123",
        )
    )
    r = Receiver(rt)
    try:
        for name in ("02-TASKS_CREATED", "04-ANNOTATION_CREATED", "06-ANNOTATION_UPDATED"):
            assert r.post(delivery(name), path="/webhooks/label-studio/1").status_code == 202
        run_worker(rt)
    finally:
        r.close()
        fake.close()
    assert set(_statuses(rt).values()) == {"applied"}
    assert sum("/export" in p for p in fake.requests) == 1  # three deliveries, one pull
    for entry in _export(1):
        assert task_file(rt, entry["id"]) == entry  # identical to the export entry
    with rt.sessions() as session:
        project = session.get(Project, 1)
    assert "Truck" in project.label_config


def test_a_pull_removes_what_label_studio_no_longer_has(tmp_path, sqlite_url, redis_url):
    fake = _fake_ls("ls-token-123")
    rt = Runtime(
        make_settings(
            tmp_path,
            sqlite_url,
            redis_url,
            label_studio_url=fake.url,
            label_studio_api_key="ls-token-123",
        )
    )
    r = Receiver(rt)
    try:
        _post_all(r, [(n, b) for n, b in captured_sequence() if n < "10"])  # to annotation 3
        run_worker(rt)
        assert _task_ids(rt) == {1, 2, 3}
        r.post({"action": "TASKS_DELETED"}, path="/webhooks/label-studio/1")
        run_worker(rt)
    finally:
        r.close()
        fake.close()
    assert _task_ids(rt) == {1, 3}
    assert [a["id"] for a in task_file(rt, 1)["annotations"]] == [2]


def test_a_failed_pull_is_kept_and_replayable(tmp_path, sqlite_url, redis_url):
    fake = _fake_ls("the-right-token")
    wrong = make_settings(
        tmp_path,
        sqlite_url,
        redis_url,
        label_studio_url=fake.url,
        label_studio_api_key="a-wrong-token",
    )
    rt = Runtime(wrong)
    r = Receiver(rt)
    try:
        r.post(delivery("04-ANNOTATION_CREATED"), path="/webhooks/label-studio/1")
        for _ in range(wrong.max_attempts):
            run_worker(rt)
            sweeper.sweep(rt, min_age_s=0)
        with rt.sessions() as session:
            row = session.scalar(select(Delivery))
        assert (row.status, row.attempts) == ("failed", wrong.max_attempts)
        assert "HTTP 401" in row.last_error
        assert "the-right-token" not in row.last_error

        fixed = Runtime(
            make_settings(
                tmp_path,
                sqlite_url,
                redis_url,
                label_studio_url=fake.url,
                label_studio_api_key="the-right-token",
            )
        )
        with fixed.sessions() as session:
            assert admission.readmit(session.get(Delivery, row.id), fixed.settings) == []
            session.commit()
        sweeper.sweep(fixed, min_age_s=0)
        run_worker(fixed)
        assert _statuses(fixed) == {row.id: "applied"}
        assert task_file(fixed, 1) == _export(1)[0]
    finally:
        r.close()
        fake.close()


def test_rejected_delivery_is_listed_and_replayable(
    tmp_path, sqlite_url, redis_url, monkeypatch, capsys
):
    from sync import cli

    strict = make_settings(tmp_path, sqlite_url, redis_url, max_items=2)
    r = Receiver(Runtime(strict))
    try:
        rejected = r.post(delivery("01-TASKS_CREATED"))  # 3 tasks > 2
        still_bad = r.post({"action": "TASKS_DELETED", "tasks": [{"id": "x"}]})
    finally:
        r.close()
    assert rejected.status_code == still_bad.status_code == 400
    qid = rejected.json()["quarantine_id"]
    for key, value in {
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["deliveries", "list", "--rejected"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("rejected") == 2 and "maxItems" in listing
    stored = r.app.config["RUNTIME"].sessions().get(Delivery, qid).body
    assert delivery("01-TASKS_CREATED")["project"]["token"].encode() not in stored

    assert cli.main(["deliveries", "replay", str(still_bad.json()["quarantine_id"])]) == 2
    assert "still invalid" in capsys.readouterr().err
    assert cli.main(["deliveries", "replay", str(qid)]) == 0
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    run_worker(rt)
    assert _task_ids(rt) == {1, 2, 3}


def test_status_reports_each_project(receiver, runtime, monkeypatch, capsys):
    from sync import cli

    _post_all(receiver, [(n, b) for n, b in captured_sequence() if n < "10"])
    receiver.post({"action": "TASKS_CREATED"}, path="/webhooks/label-studio/1")  # a pull
    run_worker(runtime)
    settings = runtime.settings
    for key, value in {
        "ANNOSYNC_DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "ANNOSYNC_DATA_DIR": str(settings.data_dir),
    }.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    project = next(p for p in report["projects"] if p["project"] == 1)
    assert (project["tasks"], project["annotations"]) == (3, 3)
    assert project["failed"] == 1  # the pull, with no LABEL_STUDIO_URL configured
    assert project["pending"] == 0 and project["files_owed"] == 0
    assert cli.main(["status", "--project", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["1", "3", "3"]
