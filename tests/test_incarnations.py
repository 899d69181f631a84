"""Reused ids, replays and failures applied right: the old incarnation of an id never acts on
the new one, replays pass today's checks, and failures neither loop nor retry blindly."""

from __future__ import annotations

import shutil
import time

from conftest import SECRET, Receiver, bucket, delivery, make_settings, run_worker, task_file
from lsfake import FakeLabelStudio
from sqlalchemy import select

from sync import cli, sweeper
from sync.models import Delivery
from sync.reconcile import resync_project
from sync.runtime import Runtime

T0, T1, T4 = "2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z", "2026-03-01T10:04:00Z"


def _task(task_id: int, created: str) -> dict:
    return {
        "id": task_id,
        "data": {"image": f"http://example.com/{task_id}.jpg"},
        "created_at": created,
        "updated_at": created,
        "project": 1,
    }


def _created(*tasks: dict) -> dict:
    return {**delivery("01-TASKS_CREATED"), "tasks": list(tasks)}


def _deleted(*ids: int) -> dict:
    return {**delivery("13-TASKS_DELETED"), "tasks": [{"id": i} for i in ids]}


def _annotation(ann_id: int, task: dict, created: str) -> dict:
    body = delivery("03-ANNOTATION_CREATED")
    annotation = {**body["annotation"], "id": ann_id, "task": task["id"]}
    annotation.update(created_at=created, updated_at=created)
    return {**body, "annotation": annotation, "task": task}


def _post(receiver, *bodies: dict) -> None:
    for body in bodies:
        answer = receiver.post(body)
        assert answer.status_code == 202, answer.text


def test_a_late_annotation_of_a_deleted_task_does_not_land_on_the_id_reused(receiver, runtime):
    # Label Studio on SQLite reuses task ids: 1301 is created, annotated, deleted and created
    # again; the annotation's payload names the first task (created_at t0 < t4).
    first, second = _task(1301, T0), _task(1301, T4)
    _post(receiver, _created(first), _deleted(1301), _created(second))
    _post(receiver, _annotation(11001, first, T1))
    run_worker(runtime)
    doc = task_file(runtime, 1301)
    assert doc["created_at"].startswith("2026-03-01T10:04") and doc["annotations"] == []


def test_a_re_create_seen_before_its_delete_replaces_the_task_and_its_annotations(
    receiver, runtime
):
    first, second = _task(1302, T0), _task(1302, T4)
    _post(receiver, _created(first), _annotation(11002, first, T1))
    run_worker(runtime)
    assert [a["id"] for a in task_file(runtime, 1302)["annotations"]] == [11002]
    _post(receiver, _created(second))  # the delete between them was never delivered
    run_worker(runtime)
    doc = task_file(runtime, 1302)
    assert doc["created_at"].startswith("2026-03-01T10:04") and doc["annotations"] == []


def _cli_env(monkeypatch, rt: Runtime, **extra: str) -> None:
    s = rt.settings
    env = {
        "ANNOSYNC_DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "ANNOSYNC_DATA_DIR": str(s.data_dir),
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_EXPORT_DEBOUNCE_MS": "0",
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _delivery_ids(rt: Runtime) -> list[int]:
    with rt.sessions() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def test_replaying_an_old_delete_never_removes_a_task_created_again_since(
    receiver, runtime, monkeypatch, capsys
):
    _post(receiver, _created(_task(1401, T0)), _deleted(1401), _created(_task(1401, T4)))
    run_worker(runtime)
    assert task_file(runtime, 1401)
    old_delete = _delivery_ids(runtime)[1]
    _cli_env(monkeypatch, runtime)
    assert cli.main(["deliveries", "replay", str(old_delete)]) == 0
    assert "replaying 1 delivery" in capsys.readouterr().out
    run_worker(runtime)
    with runtime.sessions() as session:
        assert session.get(Delivery, old_delete).status == "applied"
    assert task_file(runtime, 1401)["created_at"].startswith("2026-03-01T10:04")


def test_a_replay_is_checked_against_todays_limits(
    tmp_path, sqlite_url, redis_url, monkeypatch, capsys
):
    strict = Runtime(make_settings(tmp_path, sqlite_url, redis_url, max_items=2))
    r = Receiver(strict)
    try:
        rejected = r.post(delivery("01-TASKS_CREATED"))  # 3 tasks > 2
    finally:
        r.close()
    qid = rejected.json()["quarantine_id"]
    _cli_env(monkeypatch, strict, ANNOSYNC_MAX_ITEMS="2")
    assert cli.main(["deliveries", "replay", str(qid)]) == 2
    err = capsys.readouterr().err
    assert f"delivery {qid} is still invalid: $: 3 tasks or annotations" in err
    with strict.sessions() as session:
        assert session.get(Delivery, qid).status == "rejected"


def test_replay_names_each_refused_delivery_and_replays_the_rest(
    receiver, runtime, monkeypatch, capsys
):
    _post(receiver, _created(_task(1501, T0)))
    run_worker(runtime)
    [good] = _delivery_ids(runtime)
    _cli_env(monkeypatch, runtime)
    assert cli.main(["deliveries", "replay", str(good), "999999"]) == 2
    captured = capsys.readouterr()
    assert "replaying 1 delivery" in captured.out and "no delivery 999999" in captured.err


def test_a_delivery_that_cannot_be_applied_fails_at_once_and_the_others_apply(receiver, runtime):
    body = delivery("22-ANNOTATIONS_CREATED")
    body["annotation"][0]["task"] = 987654  # a task the payload does not carry
    _post(receiver, body, delivery("01-TASKS_CREATED"))
    run_worker(runtime)
    with runtime.sessions() as session:
        rows = {d.action: d for d in session.scalars(select(Delivery))}
    bad = rows["ANNOTATIONS_CREATED"]
    assert (bad.status, bad.attempts) == ("failed", 1)  # not retried blindly
    assert "its task is not in the payload" in bad.last_error
    assert rows["TASKS_CREATED"].status == "applied"


def test_a_failing_drain_backs_off_instead_of_looping_and_recovers(receiver, runtime, drain_jobs):
    target = bucket(runtime)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("not a folder: every write fails")
    _post(receiver, _created(_task(1601, T0)))
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:  # a sweep every 0.1 s, as a busy worker would
        sweeper.sweep(runtime, min_age_s=0)
        run_worker(runtime)
        time.sleep(0.1)
    attempts = len(drain_jobs)
    assert 2 <= attempts <= 4  # at 0, ~1 and ~3 s: not one per sweep (~30)
    target.unlink()
    deadline = time.monotonic() + 10
    while task_file(runtime, 1601) is None and time.monotonic() < deadline:
        sweeper.sweep(runtime, min_age_s=0)
        run_worker(runtime)
        time.sleep(0.1)
    assert task_file(runtime, 1601) is not None


def test_a_pull_repairs_what_delete_payloads_cannot_decide(tmp_path, sqlite_url, redis_url):
    # Annotation 11001 on task 1101 is deleted, then the id is reused on task 1102; delivered
    # create, re-create, delete. A delete payload carries ids only, so task 1102 loses the
    # annotation; the scheduled pull from Label Studio gives it back.
    t1, t2 = _task(1101, T0), _task(1102, T0)
    fake = FakeLabelStudio(
        "ls-token",
        {1: delivery("15-PROJECT_UPDATED")["project"]},
        {1: [t1, {**t2, "annotations": [_annotation(11001, t2, T4)["annotation"]]}]},
    )
    rt = Runtime(
        make_settings(
            tmp_path,
            sqlite_url,
            redis_url,
            label_studio_url=fake.url,
            label_studio_api_key="ls-token",
        )
    )
    r = Receiver(rt)
    try:
        _post(r, _created(t1, t2), _annotation(11001, t1, T1), _annotation(11001, t2, T4))
        _post(r, {**delivery("11-ANNOTATIONS_DELETED"), "annotations": [{"id": 11001}]})
        run_worker(rt)
        assert task_file(rt, 1102)["annotations"] == []  # undecidable from the payloads
        summary = resync_project(rt, 1, from_labelstudio=True)
        run_worker(rt)
    finally:
        r.close()
        fake.close()
    assert summary.pulled.tasks_seen == 2
    assert [a["id"] for a in task_file(rt, 1102)["annotations"]] == [11001]
    assert task_file(rt, 1101)["annotations"] == []
