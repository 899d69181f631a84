"""A poisoned project never stops another: project A pulls a bomb label config and poisoned
tasks while project B receives deliveries, with the receiver and the worker running as the
processes they are in production."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import orjson
import pytest
from conftest import bucket, delivery, make_settings
from lsfake import FakeLabelStudio

from sync import db, launcher, store
from sync.models import Project
from sync.runtime import Runtime
from tests.served import ROOT, percentile, post, receiver_env, served, update_body

A, B = 2, 1
STAMP = "2026-02-01T00:00:00Z"


def _region(n: int, label: str = "Car") -> dict:
    return {
        "id": f"r{n}",
        "from_name": "bbox",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 640,
        "original_height": 480,
        "value": {"x": 1 + n % 90, "y": 2, "width": 5, "height": 5, "rectanglelabels": [label]},
    }


def _task(task_id: int, regions: int = 2, image: str | None = None) -> dict:
    annotation = {
        "id": task_id * 10,
        "result": [_region(n) for n in range(regions)],
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    return {
        "id": task_id,
        "data": {"image": image or f"http://example.com/img/{task_id}.jpg"},
        "annotations": [annotation],
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def _project_a() -> tuple[dict, list[dict]]:
    project = copy.deepcopy(delivery("15-PROJECT_UPDATED")["project"])
    project["id"] = A
    project["label_config"] = (  # 150 bytes asking for a million classes
        '<View><Image name="image" value="$image"/><RectangleLabels name="bbox" '
        'toName="image"><Label value="Car" category="1000000"/></RectangleLabels></View>'
    )
    tasks = [_task(2000 + n) for n in range(1, 501)]
    tasks[10] = _task(2011, regions=80)  # over the worker's ANNOSYNC_MAX_REGIONS=50
    tasks[20] = _task(2021, regions=120)
    tasks[30] = _task(2031, image="http://[::1/x.jpg")  # Python's urlparse raises on it
    return project, tasks


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "worker"],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "error", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _lead_time(rt: Runtime, task_id: int) -> float | None:
    path = bucket(rt) / "tasks" / f"{task_id}.json"
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc["annotations"][0]["lead_time"] if doc.get("annotations") else None


def _written(rt: Runtime) -> set[int]:
    return {int(p.stem) for p in (bucket(rt) / "tasks").glob("*.json")} - {1, 2, 3}


def _exported(rt: Runtime) -> set[int]:
    labels = bucket(rt) / "exports" / str(A) / "yolo" / "labels"
    return {int(p.name.split("__")[0]) for p in labels.glob("*.txt")}


def _wait_for(check, timeout: float = 30.0) -> float:
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout, "timed out"
        time.sleep(0.005)
    return time.perf_counter() - started


@pytest.mark.timing
def test_a_bomb_config_and_poisoned_tasks_in_a_never_hold_up_b(tmp_path, sqlite_url, redis_url):
    project, tasks = _project_a()
    fake = FakeLabelStudio("ls-token", {A: project}, {A: tasks})
    env = receiver_env(
        tmp_path,
        sqlite_url,
        redis_url,
        LABEL_STUDIO_URL=fake.url,
        LABEL_STUDIO_API_KEY="ls-token",
        ANNOSYNC_RESYNC_INTERVAL_S="0",  # the fake knows project A only
        ANNOSYNC_MAX_REGIONS="50",
        ANNOSYNC_EXPORT_DEBOUNCE_MS="100",
        ANNOSYNC_SWEEP_INTERVAL_S="0.5",
    )
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    db.upgrade(sqlite_url)
    worker = _worker(env)
    latencies = []
    try:
        with served(env) as base:
            answer, _ = post(
                base, orjson.dumps(delivery("01-TASKS_CREATED")), "/webhooks/label-studio"
            )
            assert answer.status_code == 202
            _wait_for(lambda: (bucket(rt) / "tasks" / "1.json").exists())
            pull = orjson.dumps({"action": "TASKS_CREATED"})
            assert post(base, pull, f"/webhooks/label-studio/{A}")[0].status_code == 202
            for seq in range(1, 41):
                answer, _ = post(base, update_body(seq, task_id=1, project_id=B))
                assert answer.status_code == 202
                latencies.append(_wait_for(lambda s=seq: _lead_time(rt, 1) == s))
                time.sleep(0.05)
            _wait_for(lambda: _exported(rt) == _written(rt) - {2011, 2021} != set(), 60)
            rss = _peak_rss_mb(worker.pid)
    finally:
        launcher.terminate([worker])
        fake.close()
    assert percentile(latencies, 0.99) < 1.0, sorted(latencies)[-5:]
    assert rss < 300, f"worker peak RSS {rss:.0f} MB"
    assert _written(rt) == {t["id"] for t in tasks}  # every task file, the poisoned ones too
    assert _exported(rt) == _written(rt) - {2011, 2021}
    with rt.sessions() as session:
        reasons = {task: why for task, _p, why in store.failed_tasks(session, A)}
        config_error = session.get(Project, A).config_error
    assert sorted(reasons) == [2011, 2021]
    assert "80 regions; at most 50" in reasons[2011]
    assert config_error.startswith("label config refused: category 1000000")
