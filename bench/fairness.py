"""Project B's task-file freshness while project A imports, with and without the drain's
yielding (a drain writes 100 tasks at a time and queues the rest behind other projects while
they wait; without it, a drain writes all it owes first).

One worker (as ``annosync up`` runs) on SQLite and a local bucket, in this process: A's
import is a pull of ``--tasks`` tasks from a fake Label Studio; B receives an annotation
update every 100 ms, and the time until ``tasks/1.json`` shows it is B's freshness.
Usage: .venv/bin/python bench/fairness.py [--tasks 5000] [--updates 40]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from redis import Redis
from rq import SimpleWorker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lsfake import FakeLabelStudio  # noqa: E402

from config.settings import load_settings  # noqa: E402
from sync import db, inbox, jobs, launcher  # noqa: E402
from sync.runtime import Runtime, set_runtime  # noqa: E402

HOOKS = ROOT / "tests/fixtures/label-studio/webhooks"
CREATED = json.loads((HOOKS / "01-TASKS_CREATED.json").read_text())["body"]
UPDATED = json.loads((HOOKS / "05-ANNOTATION_UPDATED.json").read_text())["body"]
PROJECT = json.loads((HOOKS / "15-PROJECT_UPDATED.json").read_text())["body"]["project"]


def _a_tasks(count: int) -> list[dict]:
    region = copy.deepcopy(UPDATED["annotation"]["result"][0])
    return [
        {
            "id": 10_000 + n,
            "data": {"image": f"http://example.com/a/{n}.jpg"},
            "annotations": [{"id": 10_000 + n, "result": [region, region]}],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
        for n in range(count)
    ]


def _record(rt: Runtime, body: dict, project_id: int) -> None:
    inbox.record(
        rt.engine,
        action=body["action"],
        project_id=project_id,
        body=orjson.dumps(body),
        key=None,
        status=inbox.PENDING,
    )
    jobs.request_drain(rt.redis, rt.settings.queue_name, project_id)


def _lead_time(rt: Runtime) -> float | None:
    path = Path(rt.settings.storage_url.removeprefix("file://")) / "tasks" / "1.json"
    try:
        return orjson.loads(path.read_bytes())["annotations"][0]["lead_time"]
    except (OSError, orjson.JSONDecodeError, IndexError, KeyError):
        return None


def run(tasks: int, updates: int, yielding: bool, redis_url: str) -> list[float]:
    Redis.from_url(redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="annosync-fairness-"))
    fake = FakeLabelStudio("ls", {2: {**PROJECT, "id": 2}}, {2: _a_tasks(tasks)})
    env = {
        "ANNOSYNC_DATA_DIR": str(tmp),
        "REDIS_URL": redis_url,
        "LABEL_STUDIO_URL": fake.url,
        "LABEL_STUDIO_API_KEY": "ls",
        "ANNOSYNC_RESYNC_INTERVAL_S": "0",
    }
    rt = Runtime(load_settings(env))
    db.upgrade(rt.settings.database_url)
    set_runtime(rt)
    original = jobs._others_waiting
    if not yielding:
        jobs._others_waiting = lambda _rt, _project: False
    latencies: list[float] = []
    done = threading.Event()
    measuring = threading.Thread(target=_measure, args=(rt, tmp, updates, latencies, done))
    measuring.start()
    try:  # the worker runs here, in the main thread (RQ installs signal handlers)
        worker = SimpleWorker([rt.settings.queue_name], connection=rt.worker_redis)
        while not done.is_set():
            worker.work(burst=True, logging_level="ERROR")
            time.sleep(0.002)
    finally:
        measuring.join()
        jobs._others_waiting = original
        fake.close()
    return latencies


def _measure(rt: Runtime, tmp: Path, updates: int, latencies: list, done) -> None:
    try:
        _record(rt, CREATED, 1)
        while _lead_time(rt) is None and not (tmp / "bucket/tasks/1.json").exists():
            time.sleep(0.01)
        # A's label config is known before its import (a config change would add a full
        # rebuild of A's exports, one unit of work that does not yield).
        _record(rt, {"action": "PROJECT_UPDATED", "project": {**PROJECT, "id": 2}}, 2)
        time.sleep(0.5)
        _record(rt, {"action": "TASKS_CREATED"}, 2)  # payload-less: A is pulled
        time.sleep(0.05)
        for seq in range(1, updates + 1):
            body = copy.deepcopy(UPDATED)
            body["annotation"].update(lead_time=seq, updated_at=f"2026-11-22T00:00:{seq:02d}Z")
            started = time.perf_counter()
            _record(rt, body, 1)
            while _lead_time(rt) != seq:
                time.sleep(0.002)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)
    finally:
        done.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    if not launcher.redis_reachable(args.redis):
        print(f"no Redis at {args.redis}", file=sys.stderr)
        return 2
    print(f"B's task-file freshness while A pulls {args.tasks} tasks (one worker, SQLite)")
    print(f"{'drain':<14}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>9}")
    for yielding in (True, False):
        found = sorted(run(args.tasks, args.updates, yielding, args.redis))
        p99 = found[min(len(found) - 1, int(0.99 * len(found)))]
        name = "yields" if yielding else "writes all"
        print(
            f"{name:<14}{statistics.median(found) * 1000:>8.0f}{p99 * 1000:>9.0f}"
            f"{found[-1] * 1000:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
