"""Fault injection: workers SIGKILLed at random moments while 1,000 deliveries arrive from
concurrent clients, several times each and out of order. Every 2xx delivery must end applied
and the bucket must equal the state built by applying the same deliveries in one process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pgcluster
import pytest
import requests
from conftest import delivery, make_settings
from sqlalchemy import func, select

from bench.stack import stack
from sync import admission, db, jobs
from sync.convert import context, convert
from sync.group_commit import GroupCommit
from sync.models import Delivery, Task
from sync.runtime import Runtime, set_runtime

pytestmark = pytest.mark.faults
PROJECT = delivery("15-PROJECT_UPDATED")["project"]
TASKS = 300
ROOT = Path(__file__).resolve().parents[1]


def _stream(seed: int = 11, updates: int = 900) -> list[bytes]:
    """1,000 deliveries: tasks created in batches, then annotation creates/updates/deletes
    and a few task deletes, each with a distinct newer timestamp."""
    rng = random.Random(seed)
    template = delivery("01-TASKS_CREATED")["tasks"][0]
    bodies = []
    for start in range(1, TASKS + 1, 3):
        tasks = [
            {**template, "id": i, "inner_id": i, "data": {"image": f"s3://b/{i}.jpg"}}
            for i in range(start, start + 3)
        ]
        bodies.append({"action": "TASKS_CREATED", "tasks": tasks, "project": PROJECT})
    owner: dict[int, int] = {}
    for seq in range(1, updates - len(bodies) + 101):
        roll = rng.random()
        ann_id = rng.randint(1, 400)
        if roll < 0.85:
            body = delivery("05-ANNOTATION_UPDATED")
            task_id = owner.setdefault(ann_id, rng.randint(1, TASKS))
            stamp = f"2026-11-22T{seq // 3600:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z"
            body["annotation"].update(
                id=ann_id,
                task=task_id,
                updated_at=stamp,
                lead_time=seq,
                created_at="2026-11-22T00:00:00.000000Z",
            )
            body["annotation"]["result"][0]["value"]["x"] = float(seq % 60)
            body["task"].update(id=task_id, data={"image": f"s3://b/{task_id}.jpg"})
            body["project"] = PROJECT
        elif roll < 0.97:
            body = {
                "action": "ANNOTATIONS_DELETED",
                "annotations": [{"id": ann_id}],
                "project": PROJECT,
            }
        else:
            body = {
                "action": "TASKS_DELETED",
                "tasks": [{"id": rng.randint(1, TASKS)}],
                "project": PROJECT,
            }
        bodies.append(body)
    return [orjson.dumps(b) for b in bodies[:1000]]


def _expected(bodies: list[bytes], tmp: Path, redis_url: str) -> dict[str, bytes]:
    """The bucket a calm, single-process annosync builds from the same deliveries."""
    url = f"sqlite:///{tmp}/expected.db"
    db.upgrade(url)
    rt = Runtime(make_settings(tmp / "expected", url, redis_url))
    set_runtime(rt)
    recorder = GroupCommit(rt)
    for raw in bodies:
        admission.accept(recorder, admission.parse(raw), raw, 1)
    jobs.drain_project(1)
    return _tasks(Path(rt.settings.storage_url.removeprefix("file://")))


def _tasks(bucket: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (bucket / "tasks").glob("*.json")}


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_exports_equal_convert(bucket: Path, tmp: Path, limit_s: float = 180) -> None:
    """The kept-fresh exports equal `annosync convert` of the final task files (waiting for
    the last debounced aggregate rebuild: after a worker is killed inside a rebuild, its
    export lock and queued flag expire first, 30 s each, so on a loaded machine this can
    take over a minute)."""
    config = tmp / "config.xml"
    config.write_text(PROJECT["label_config"])
    exports = bucket / "exports" / "1"
    deadline = time.monotonic() + limit_s
    while not (exports / "yolo" / "classes.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the first aggregate rebuild is still on its way
    while True:
        expected = {}
        for fmt, folder in (("YOLO", "yolo"), ("COCO", "coco")):
            out = tmp / f"convert-{fmt}"
            ctx = context(config, exports / "yolo" / "classes.txt")
            convert(bucket / "tasks", fmt, out, ctx, overwrite=True)
            expected[folder] = _tree(out)
        got = {folder: _tree(exports / folder) for folder in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == expected
    assert sum(k.startswith("labels/") for k in got["yolo"]) > 100  # not vacuous


def _statuses(url: str) -> dict[str, int]:
    with db.session_factory(url)() as session:
        query = select(Delivery.status, func.count()).group_by(Delivery.status)
        return dict(session.execute(query).all())


def _converged(url: str) -> bool:
    with db.session_factory(url)() as session:
        pending = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
        )
        dirty = session.scalar(select(func.count()).select_from(Task).where(Task.dirty))
    return pending == 0 and dirty == 0


def test_workers_killed_at_random_lose_nothing(tmp_path, redis_url):
    bodies = _stream()
    sends = [raw for raw in bodies for _ in range(3)]  # every delivery three times…
    random.Random(5).shuffle(sends)  # …in shuffled order
    kills = 0
    with stack("sqlite", workers=2, debounce_ms=0) as s:
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            rng = random.Random(3)
            while not stop.is_set():
                time.sleep(rng.uniform(0.1, 0.4))
                victim = rng.randrange(len(s.workers))
                s.workers[victim].send_signal(signal.SIGKILL)
                s.workers[victim].wait()
                kills += 1
                s.workers[victim] = subprocess.Popen(
                    [sys.executable, "-m", "sync.cli", "worker"],
                    env=s.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

        thread = threading.Thread(target=killer)
        thread.start()
        accepted = []

        def client(chunk: list[bytes]) -> None:
            session = requests.Session()
            for raw in chunk:
                r = session.post(s.base + "/webhooks/label-studio/1", data=raw, headers=s.headers())
                assert r.status_code == 202, r.text
                accepted.append(r.json()["status"])

        started = time.monotonic()
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(client, [sends[i::8] for i in range(8)]))
            while kills < 20:
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join()
        url = s.env["ANNOSYNC_DATABASE_URL"]
        _wait_converged(url)
        converge_s = time.monotonic() - started
        statuses = _statuses(url)
        got = _tasks(s.bucket)
        _assert_exports_equal_convert(s.bucket, tmp_path)
    print(
        f"\nfaults: {len(sends)} sent, {kills} SIGKILLs, statuses {statuses}, "
        f"converged in {converge_s:.1f} s"
    )
    assert kills >= 20
    distinct = len(set(bodies))
    assert statuses == {"applied": distinct}  # every distinct delivery applied, once
    assert accepted.count("queued") == distinct
    assert accepted.count("duplicate") == len(sends) - distinct
    expected = _expected(bodies, tmp_path, redis_url)
    assert got.keys() == expected.keys()
    assert [k for k in got if got[k] != expected[k]] == []


def _send_all(base: str, headers: dict, sends: list[bytes], clients: int) -> list[str]:
    accepted: list[str] = []

    def client(chunk: list[bytes]) -> None:
        session = requests.Session()
        for raw in chunk:
            r = session.post(base + "/webhooks/label-studio/1", data=raw, headers=headers)
            assert r.status_code == 202, r.text
            accepted.append(r.json()["status"])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [sends[i::clients] for i in range(clients)]))
    return accepted


def _wait_converged(url: str, limit_s: float = 120) -> float:
    started = time.monotonic()
    while not _converged(url):
        assert time.monotonic() - started < limit_s, f"not converged after {limit_s} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_redis_restarted_empty_mid_stream_loses_nothing(tmp_path, redis_url):
    bodies = _stream(seed=23)
    with stack("sqlite", workers=2, debounce_ms=0, private_redis=True) as s:
        half = len(bodies) // 2
        accepted = _send_all(s.base, s.headers(), bodies[:half], 4)
        s.redis_server.stop()  # the queue, the flags and the locks are gone
        accepted += _send_all(s.base, s.headers(), bodies[half:], 4)  # still 202: recorded
        time.sleep(3)
        s.redis_server.start()  # a fresh, empty Redis
        url = s.env["ANNOSYNC_DATABASE_URL"]
        converge_s = _wait_converged(url)
        assert all(w.poll() is None for w in s.workers), "a worker exited with the outage"
        statuses = _statuses(url)
        got = _tasks(s.bucket)
        _assert_exports_equal_convert(s.bucket, tmp_path)
    print(
        f"\nredis outage: {len(bodies)} sent, statuses {statuses}, "
        f"converged {converge_s:.1f} s after Redis returned"
    )
    assert statuses == {"applied": len(set(bodies))}
    assert accepted.count("queued") == len(set(bodies))
    assert got == _expected(bodies, tmp_path, redis_url)


def _post_retrying(base: str, headers: dict, raw: bytes, limit_s: float = 60) -> tuple[str, int]:
    """A sender that retries on 503, as Standard Webhooks senders do; returns the status and
    how many 503s it saw."""
    refused = 0
    deadline = time.monotonic() + limit_s
    while True:
        r = requests.post(base + "/webhooks/label-studio/1", data=raw, headers=headers)
        if r.status_code == 202:
            return r.json()["status"], refused
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "the receiver did not recover"
        refused += 1
        time.sleep(0.2)


def test_s3_unavailable_for_a_while_loses_nothing(tmp_path, redis_url):
    import boto3
    from moto.server import ThreadedMotoServer

    from sync.launcher import free_port
    from sync.storage import open_storage

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="faults")
    bodies = _stream(seed=31)
    env = {"ANNOSYNC_STORAGE_URL": "s3://faults/p", "ANNOSYNC_S3_ENDPOINT_URL": endpoint}
    try:
        with stack("sqlite", workers=2, debounce_ms=0, extra_env=env) as s:
            half = len(bodies) // 2
            _send_all(s.base, s.headers(), bodies[:half], 4)
            server.stop()
            _send_all(s.base, s.headers(), bodies[half:], 4)
            time.sleep(5)  # writes fail and are retried with backoff meanwhile
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            url = s.env["ANNOSYNC_DATABASE_URL"]
            converge_s = _wait_converged(url)
            statuses = _statuses(url)
        bucket = open_storage("s3://faults/p", endpoint_url=endpoint)
        got = {key.split("/")[-1]: bucket.get(key) for key in bucket.list("tasks/")}
    finally:
        server.stop()
    print(f"\ns3 outage: {len(bodies)} sent, statuses {statuses}, converged {converge_s:.1f} s")
    assert statuses == {"applied": len(set(bodies))}
    assert got == _expected(bodies, tmp_path, redis_url)


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test's own: stopping the machine's server would cut off
    every other client of it."""
    if reason := pgcluster.unavailable():
        pytest.skip(reason)
    cluster = pgcluster.ThrowawayPostgres()
    yield cluster
    cluster.close()


def test_postgresql_restarted_mid_stream_503_then_recovers(tmp_path, redis_url, own_postgres):
    bodies = _stream(seed=47)
    with stack("postgresql", workers=2, debounce_ms=0, pg_admin=own_postgres.admin_url) as s:
        third = len(bodies) // 3
        accepted = _send_all(s.base, s.headers(), bodies[:third], 4)
        refused = 0
        own_postgres.stop()
        try:
            for raw in bodies[third : 2 * third][:20]:  # while it is down: 503, never 202
                r = requests.post(
                    s.base + "/webhooks/label-studio/1", data=raw, headers=s.headers()
                )
                assert r.status_code == 503 and r.headers["Retry-After"]
                refused += 1
        finally:
            own_postgres.start()
        for raw in bodies[third:]:
            status, extra = _post_retrying(s.base, s.headers(), raw)
            accepted.append(status)
            refused += extra
        url = s.env["ANNOSYNC_DATABASE_URL"]
        converge_s = _wait_converged(url)
        statuses = _statuses(url)
        got = _tasks(s.bucket)
        _assert_exports_equal_convert(s.bucket, tmp_path)
    print(
        f"\npostgresql restart: {len(bodies)} sent, {refused} answered 503, "
        f"statuses {statuses}, converged {converge_s:.1f} s"
    )
    assert refused >= 20
    assert statuses == {"applied": len(set(bodies))}
    assert got == _expected(bodies, tmp_path, redis_url)


def test_a_worker_started_while_the_database_is_down_waits_for_it(tmp_path, redis_url):
    from sync.launcher import free_port

    env = {
        **os.environ,
        "ANNOSYNC_DATA_DIR": str(tmp_path),
        "ANNOSYNC_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": "faults-secret-123456",
    }
    root = Path(__file__).resolve().parents[1]
    worker = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "worker"],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(4)
        assert worker.poll() is None  # still there, retrying
    finally:
        worker.terminate()
        output = worker.communicate(timeout=15)[0].decode()
    assert "database unavailable" in output
    assert "Traceback" not in output


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; its reaper may not have called yet


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_workers_scheduler_does_not_outlive_it(tmp_path, sqlite_url, redis_url):
    env = {
        **os.environ,
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": "fault-secret-123456",
        "ANNOSYNC_QUEUE": f"orphans-{os.getpid()}",  # its own scheduler lock
    }
    worker = subprocess.Popen([sys.executable, "-m", "sync.cli", "worker"], env=env, cwd=ROOT)
    scheduler: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (scheduler := _children(worker.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scheduler, "the worker started no scheduler process"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 15
        while _running(scheduler[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(scheduler[0]), "the scheduler outlived its worker"
    finally:
        worker.kill()
        worker.wait()
        for pid in scheduler:  # whatever happened, leave no process behind
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
