"""Reconciliation on local and S3 storage: drift repaired, orphans removed, dry runs harmless."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time

import orjson
import pytest
from conftest import (
    FIXTURES,
    SECRET,
    Receiver,
    captured_sequence,
    delivery,
    make_settings,
    run_worker,
)
from lsfake import FakeLabelStudio
from moto.server import ThreadedMotoServer
from rq import Queue
from sqlalchemy import func, select

from sync import backoff, db, events, inbox, sweeper
from sync import reconcile as resync_module
from sync.launcher import free_port
from sync.models import Delivery, Task
from sync.pull import apply_snapshot
from sync.reconcile import resync_project
from sync.runtime import Runtime, set_runtime


@pytest.fixture(params=["local", "s3"])
def storage_kind(request):
    return request.param


def _runtime(tmp_path, database_url, redis_url, kind, request, **extra) -> Runtime:
    overrides = dict(extra)
    if kind == "s3":
        overrides["storage_url"] = request.getfixturevalue("s3_url")
        overrides["s3_endpoint_url"] = request.getfixturevalue("s3_endpoint")
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, **overrides))
    set_runtime(rt)
    return rt


def _feed(rt: Runtime, bodies) -> None:
    r = Receiver(rt)
    try:
        for body in bodies:
            assert r.post(body).status_code == 202
        run_worker(rt)
    finally:
        r.close()


def _objects(rt: Runtime) -> dict[str, bytes]:
    return {key: rt.storage.get(key) for key in rt.storage.list("tasks/")}


def _project_one(rt: Runtime) -> dict[str, bytes]:
    _feed(rt, [b for n, b in captured_sequence() if n < "17"])
    objects = _objects(rt)
    assert set(objects) == {"tasks/1.json", "tasks/3.json"}
    return objects


def test_damaged_bucket_converges_and_dry_run_changes_nothing(
    tmp_path, database_url, redis_url, storage_kind, request
):
    rt = _runtime(tmp_path, database_url, redis_url, storage_kind, request)
    good = _project_one(rt)
    rt.storage.delete("tasks/1.json")  # removed behind annosync's back
    rt.storage.put("tasks/3.json", b'{"tampered": true}')
    rt.storage.put("tasks/999.json", b"{}")  # a stray task file
    rt.storage.put("tasks/README.txt", b"the user's own file")  # not a task file: kept
    damaged = _objects(rt)

    dry = resync_project(rt, 1, dry_run=True)
    assert (dry.written, dry.deleted, dry.unchanged) == (2, 1, 0)
    assert dry.line() == "project 1: would write 2, would delete 1, unchanged 0"
    assert _objects(rt) == damaged

    fixed = resync_project(rt, 1)
    assert (fixed.written, fixed.deleted, fixed.unchanged) == (2, 1, 0)
    assert _objects(rt) == good | {"tasks/README.txt": b"the user's own file"}
    again = resync_project(rt, 1)
    assert (again.written, again.deleted, again.unchanged) == (0, 0, 2)


def test_resync_repairs_the_exports_and_bumps_the_generation(
    tmp_path, database_url, redis_url, storage_kind, request
):
    """Damaged, missing and foreign files under exports/ are repaired by the hourly resync,
    not only by a rebuild; files outside the kept-fresh formats' folders stay."""
    rt = _runtime(tmp_path, database_url, redis_url, storage_kind, request)
    _project_one(rt)
    exports = {key: rt.storage.get(key) for key in rt.storage.list("exports/1/")}
    label = next(k for k in exports if k.startswith("exports/1/yolo/labels/"))
    before = orjson.loads(rt.storage.get("exports/1/_state.json"))["generation"]
    rt.storage.put(label, b"0 0.5 0.5 2 2\n")  # damaged
    rt.storage.delete("exports/1/yolo/classes.txt")  # missing aggregate
    rt.storage.delete("exports/1/coco/result.json")
    rt.storage.put("exports/1/yolo/labels/999999__orphan.txt", b"0 0.5 0.5 0.1 0.1\n")
    rt.storage.put("exports/1/notes/mine.txt", b"not annosync's")  # not a format's folder

    fixed = resync_project(rt, 1)
    assert (fixed.written, fixed.deleted, fixed.aggregates) == (1, 1, 2)  # classes, result
    after = {key: rt.storage.get(key) for key in rt.storage.list("exports/1/")}
    assert after.pop("exports/1/notes/mine.txt") == b"not annosync's"
    state = orjson.loads(after.pop("exports/1/_state.json"))
    exports.pop("exports/1/_state.json")
    assert after == exports
    assert state["generation"] == before + 1
    assert resync_project(rt, 1).line() == "project 1: written 0, deleted 0, unchanged 2"


def test_other_projects_files_are_not_orphans(tmp_path, sqlite_url, redis_url):
    rt = _runtime(tmp_path, sqlite_url, redis_url, "local", None)
    _feed(rt, [delivery("01-TASKS_CREATED"), delivery("17-TASKS_CREATED")])
    summary = resync_project(rt, 1)
    assert summary.deleted == 0
    assert set(_objects(rt)) == {"tasks/1.json", "tasks/2.json", "tasks/3.json", "tasks/4.json"}


def test_resync_from_label_studio_applies_missed_changes(
    tmp_path, database_url, redis_url, storage_kind, request
):
    export = json.loads((FIXTURES / "exports" / "project-1-JSON.json").read_text())
    export[1]["data"]["external_id"] = "edited-in-label-studio"  # no webhook for data edits
    new_task = copy.deepcopy(export[1])
    new_task.update(id=99, inner_id=99, created_at="2026-11-21T23:23:00.000000Z")
    export.append(new_task)  # imported with no webhook reaching us
    export.append({"data": {}})  # no id: left out, named in the summary
    fake = FakeLabelStudio(
        "tok-123456", {1: delivery("15-PROJECT_UPDATED")["project"]}, {1: export}
    )
    rt = _runtime(
        tmp_path,
        database_url,
        redis_url,
        storage_kind,
        request,
        label_studio_url=fake.url,
        label_studio_api_key="tok-123456",
    )
    try:
        # Only up to annotation 3 on task 2: the deletes of annotation 1 and task 2 were missed.
        _feed(rt, [b for n, b in captured_sequence() if n < "10"])
        assert set(_objects(rt)) == {"tasks/1.json", "tasks/2.json", "tasks/3.json"}
        summary = resync_project(rt, 1, from_labelstudio=True)
    finally:
        fake.close()
    assert summary.pulled.tasks_seen == 3
    assert summary.pulled.tasks_deleted == 1
    assert summary.pulled.annotations_deleted == 1
    assert summary.pulled.tasks_unusable == 1
    assert "1 unusable tasks left out, the first: id: must be a positive integer" in summary.line()
    objects = {k: orjson.loads(v) for k, v in _objects(rt).items()}
    assert set(objects) == {"tasks/1.json", "tasks/3.json", "tasks/99.json"}
    assert objects["tasks/3.json"]["data"]["external_id"] == "edited-in-label-studio"
    assert [a["id"] for a in objects["tasks/1.json"]["annotations"]] == [2]
    assert objects["tasks/1.json"] == export[0]
    # What the pull changed is owed to the exports too (once marked written by the resync,
    # it never reached them): the next drain renders it.
    sweeper.sweep(rt, min_age_s=0)
    run_worker(rt)
    manifest = [
        orjson.loads(line) for line in rt.storage.get("exports/1/manifest.jsonl").splitlines()
    ]
    assert sorted(entry["task_id"] for entry in manifest) == [1, 3, 99]


def test_scheduled_resync_repairs_drift(tmp_path, sqlite_url, redis_url):
    rt = _runtime(tmp_path, sqlite_url, redis_url, "local", None, resync_interval_s=3600)
    _project_one(rt)
    rt.storage.delete("tasks/3.json")
    assert sweeper.schedule_resyncs(rt) == 1
    assert sweeper.schedule_resyncs(rt) == 0  # not due again within the interval
    run_worker(rt)
    assert "tasks/3.json" in _objects(rt)


def test_s3_outage_mid_stream_loses_nothing(tmp_path, sqlite_url, redis_url, monkeypatch):
    import boto3

    monkeypatch.setattr(backoff, "BASE_S", 3.0)  # outlasts a busy machine's pauses below
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    rt = Runtime(
        make_settings(
            tmp_path, sqlite_url, redis_url, storage_url="s3://outage/p", s3_endpoint_url=endpoint
        )
    )
    set_runtime(rt)
    r = Receiver(rt)
    try:
        r.post(delivery("01-TASKS_CREATED"))
        run_worker(rt)
        server.stop()
        r.post(delivery("03-ANNOTATION_CREATED"))
        r.post(delivery("07-ANNOTATION_CREATED"))
        run_worker(rt)  # the write fails: the job is failed and scheduled for a retry
        queue = Queue(rt.settings.queue_name, connection=rt.worker_redis)
        scheduled = [queue.fetch_job(i) for i in queue.scheduled_job_registry.get_job_ids()]
        assert [j.func_name for j in scheduled] == ["sync.jobs.drain_project"]
        failed_at = time.monotonic()
        assert sweeper.sweep(rt, min_age_s=0) == 0  # the failed drain waits out its backoff
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        time.sleep(max(0.0, failed_at + backoff.BASE_S + 0.1 - time.monotonic()))
        assert sweeper.sweep(rt, min_age_s=0) == 1  # files owed are known from the store
        run_worker(rt)
        doc = orjson.loads(rt.storage.get("tasks/1.json"))
        assert [a["id"] for a in doc["annotations"]] == [1, 2]
    finally:
        r.close()
        server.stop()


def test_cli_resync_on_s3_end_to_end(tmp_path, sqlite_url, redis_url, s3_url, s3_endpoint):
    env = {
        **os.environ,
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_STORAGE_URL": s3_url,
        "ANNOSYNC_S3_ENDPOINT_URL": s3_endpoint,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
    }
    port = free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.cli",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rt = Runtime(
        make_settings(
            tmp_path, sqlite_url, redis_url, storage_url=s3_url, s3_endpoint_url=s3_endpoint
        )
    )
    try:
        import requests

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        answer = requests.post(
            f"http://127.0.0.1:{port}/webhooks/label-studio/1",
            data=json.dumps(delivery("03-ANNOTATION_CREATED")),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
        )
        assert answer.status_code == 202
        deadline = time.monotonic() + 10
        while rt.storage.get("tasks/1.json") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        good = rt.storage.get("tasks/1.json")
        assert good is not None
    finally:
        up.send_signal(2)
        up.wait(20)

    def resync(*flags: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "sync.cli", "resync", "--project", "1", *flags],
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    rt.storage.delete("tasks/1.json")
    rt.storage.put("tasks/5.json", b"stray")
    assert resync("--dry-run") == "project 1: would write 1, would delete 1, unchanged 0"
    assert rt.storage.get("tasks/1.json") is None
    # (and the aggregates the instance stopped before writing: the count depends on when)
    assert resync().startswith("project 1: written 1, deleted 1, unchanged 0")
    assert rt.storage.get("tasks/1.json") == good
    assert list(rt.storage.list("tasks/")) == ["tasks/1.json"]


def test_cli_resync_errors_are_one_line(tmp_path, sqlite_url, redis_url):
    env = {
        **os.environ,
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "sync.cli", "resync", "--project", "1", "--from-labelstudio"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2  # a usage error: the settings it needs are missing
    assert result.stderr.strip().splitlines() == [
        "annosync: --from-labelstudio needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
    ]


def _record_a_delivery(engine, key: str, recorded: threading.Event) -> None:
    """What a receiver does with a delivery (in its own transaction), then ``recorded`` is set."""
    inbox.record(
        engine, action="ANNOTATION_UPDATED", project_id=1, body=b"{}", key=key, status="pending"
    )
    recorded.set()


def test_a_pull_commits_as_it_goes_so_deliveries_are_recorded_meanwhile(database_url):
    # 100k tasks take 25-60 s to apply: in one transaction, SQLite's receivers (30 s wait)
    # would answer every delivery meanwhile with 503.
    template = json.loads((FIXTURES / "exports" / "project-1-JSON.json").read_text())[0]
    tasks = []
    for n in range(1, 31):
        task = copy.deepcopy(template)
        task.update(id=n, inner_id=n)
        task["annotations"][0].update(id=n, task=n)
        tasks.append(task)
    sessions = db.session_factory(database_url)
    recorded = threading.Event()

    def receive() -> None:
        _record_a_delivery(db.make_engine(database_url), "during-the-pull", recorded)

    def snapshot():
        for n, task in enumerate(tasks, 1):
            if n == 5:  # the first chunk's transaction is open
                threading.Thread(target=receive, daemon=True).start()
            if n == 11:  # the first chunk is committed: the delivery got its turn
                assert recorded.wait(5), "the delivery waited for the whole pull"
            yield task

    with sessions() as session:
        result = apply_snapshot(session, 1, snapshot(), "2030-01-01T00:00:00Z", commit_every=10)
    assert result.tasks_seen == 30
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 30
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1


def test_a_task_the_pull_cannot_use_is_kept_not_deleted_for_being_absent(database_url):
    template = json.loads((FIXTURES / "exports" / "project-1-JSON.json").read_text())[0]
    tasks = []
    for n in (1, 2, 3):
        task = copy.deepcopy(template)
        task.update(id=n, inner_id=n)
        task["annotations"][0].update(id=n, task=n)
        tasks.append(task)
    sessions = db.session_factory(database_url)
    with sessions() as session:
        apply_snapshot(session, 1, tasks, "2030-01-01T00:00:00Z", commit_every=10)
    broken = copy.deepcopy(tasks[1])
    broken["annotations"][0]["result"] = "not a list"
    with sessions() as session:
        result = apply_snapshot(
            session, 1, [tasks[0], broken, tasks[2]], "2030-01-02T00:00:00Z", commit_every=10
        )
    assert (result.tasks_seen, result.tasks_unusable, result.tasks_deleted) == (2, 1, 0)
    assert result.first_problem == "annotations[0].result: must be a list"
    with sessions() as session:
        assert sorted(session.scalars(select(Task.id).where(Task.deleted.is_(False)))) == [1, 2, 3]


def test_a_dry_run_pull_on_sqlite_leaves_the_database_to_the_receivers(
    tmp_path, sqlite_url, redis_url, monkeypatch, request
):
    export = json.loads((FIXTURES / "exports" / "project-1-JSON.json").read_text())
    export[1]["data"]["external_id"] = "edited-in-label-studio"
    fake = FakeLabelStudio(
        "tok-123456", {1: delivery("15-PROJECT_UPDATED")["project"]}, {1: export}
    )
    rt = _runtime(
        tmp_path,
        sqlite_url,
        redis_url,
        "local",
        request,
        label_studio_url=fake.url,
        label_studio_api_key="tok-123456",
    )
    recorded = threading.Event()

    def receive() -> None:
        _record_a_delivery(rt.engine, "during-the-dry-run", recorded)

    compare = resync_module._reconcile_storage

    def compare_after_a_delivery(*args):  # the pull is applied: its writes are pending
        threading.Thread(target=receive, daemon=True).start()
        assert recorded.wait(5), "the delivery waited for the dry run"
        return compare(*args)

    try:
        _feed(rt, [b for n, b in captured_sequence() if n < "17"])
        before = _objects(rt)
        with monkeypatch.context() as patched:
            patched.setattr(resync_module, "_reconcile_storage", compare_after_a_delivery)
            dry = resync_project(rt, 1, from_labelstudio=True, dry_run=True)
        assert _objects(rt) == before  # neither the bucket nor the store changed:
        assert list(tmp_path.rglob(".annosync-dry-run-*")) == []
        real = resync_project(rt, 1, from_labelstudio=True)  # so it does what was reported
    finally:
        fake.close()
    assert dry.written >= 1 and (dry.written, dry.deleted) == (real.written, real.deleted)
    assert dry.pulled == real.pulled
    assert orjson.loads(_objects(rt)["tasks/3.json"])["data"] == export[1]["data"]


def test_a_resync_between_drain_rounds_leaves_owed_tasks_to_the_drain(
    tmp_path, sqlite_url, redis_url
):
    # A drain that yields to other projects leaves applied-but-unwritten tasks (and deleted
    # ones) owed; a resync in that gap once marked them written, so their export outputs
    # (fragments, label files) stayed stale for good.
    rt = _runtime(tmp_path, sqlite_url, redis_url, "local", None)
    _feed(rt, [b for n, b in captured_sequence() if n < "10"])
    with rt.sessions() as session:
        events.apply(session, delivery("13-TASKS_DELETED"), 1, seq=10**6)  # applied, not written
        session.commit()
    resync_project(rt, 1)
    sweeper.sweep(rt, min_age_s=0)
    run_worker(rt)
    manifest = rt.storage.get("exports/1/manifest.jsonl").splitlines()
    deleted = {t["id"] for t in delivery("13-TASKS_DELETED")["tasks"]}
    assert deleted and not deleted & {orjson.loads(line)["task_id"] for line in manifest}
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).where(Task.dirty.is_(True))) == 0
