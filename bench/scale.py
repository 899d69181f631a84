"""Cost of one change as the project grows (1k, 10k, 100k tasks), vs a full rebuild.

For each size, in a fresh process: a SQLite store filled in bulk, a full rebuild of the
kept-fresh exports (YOLO, COCO, MANIFEST: per-task outputs + aggregates; time and peak RSS),
then one annotation update applied through the inbox and a drain: time until its task file
and YOLO label file are written (per-task path) and until the aggregates reflect it.
Usage: .venv/bin/python bench/scale.py [--tasks 1000 10000 100000]  (needs Redis: REDIS_URL)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HOOKS = ROOT / "tests/fixtures/label-studio/webhooks"


def random_rect(rng: random.Random, label: str, n: int) -> dict:
    """A 20 x 10 % rectangle result at a random place on a 1280 x 720 image (bench data)."""
    return {
        "id": f"r{n}",
        "type": "rectanglelabels",
        "from_name": "bbox",
        "to_name": "image",
        "original_width": 1280,
        "original_height": 720,
        "value": {
            "x": rng.uniform(0, 70),
            "y": rng.uniform(0, 70),
            "width": 20,
            "height": 10,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def populate(rt, n: int) -> None:
    import orjson
    from sqlalchemy import insert

    from sync import events
    from sync.models import Annotation, Task

    project = json.loads((HOOKS / "15-PROJECT_UPDATED.json").read_text())["body"]["project"]
    rng = random.Random(n)
    with rt.sessions() as session:
        events.upsert_project(session, project)
        for start in range(1, n + 1, 5000):
            tasks, annotations = [], []
            for i in range(start, min(start + 5000, n + 1)):
                task = {
                    "id": i,
                    "data": {"image": f"s3://b/images/{i}.jpg"},
                    "meta": {},
                    "created_at": "2026-11-21T00:00:00.000000Z",
                    "updated_at": "2026-11-21T00:00:00.000000Z",
                    "project": 1,
                }
                ann = {
                    "id": i,
                    "result": [
                        random_rect(rng, rng.choice(["Car", "Truck"]), k)
                        for k in range(rng.randint(1, 3))
                    ],
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-11-21T00:00:00.000000Z",
                    "updated_at": "2026-11-21T00:00:00.000000Z",
                    "task": i,
                    "project": 1,
                }
                tasks.append(
                    {
                        "id": i,
                        "project_id": 1,
                        "body": orjson.dumps(task),
                        "created_at": task["created_at"],
                        "updated_at": task["updated_at"],
                        "deleted": False,
                        "version": 1,
                        "dirty": True,
                    }
                )
                annotations.append(
                    {
                        "id": i,
                        "task_id": i,
                        "project_id": 1,
                        "body": orjson.dumps(ann),
                        "created_at": ann["created_at"],
                        "updated_at": ann["updated_at"],
                        "deleted": False,
                    }
                )
            session.execute(insert(Task), tasks)
            session.execute(insert(Annotation), annotations)
        session.commit()


def one(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:  # 100k tasks leave ~300k files: not kept
        return _measure(n, tmp)


def _measure(n: int, tmp: str) -> dict:
    import orjson
    from redis import Redis

    from config.settings import load_settings
    from sync import admission, db, exports, jobs, task_outputs
    from sync.group_commit import GroupCommit
    from sync.runtime import Runtime, set_runtime

    url = f"sqlite:///{tmp}/a.db"
    db.upgrade(url)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12")
    Redis.from_url(redis_url).flushdb()
    rt = Runtime(
        load_settings(
            {
                "ANNOSYNC_DATA_DIR": tmp,
                "ANNOSYNC_DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "ANNOSYNC_EXPORT_DEBOUNCE_MS": "0",
            }
        )
    )
    set_runtime(rt)
    populate(rt, n)
    start = time.perf_counter()
    jobs.write_dirty_tasks(rt, 1)  # task files + per-task outputs (config change: full)
    exports.write_aggregates(rt, 1)
    first_build = time.perf_counter() - start
    _reset_peak_rss()  # the rebuild's own peak, not the first build's
    start = time.perf_counter()
    task_outputs.rebuild_project(rt, 1)
    exports.write_aggregates(rt, 1)
    rebuild = time.perf_counter() - start
    rebuild_peak = _peak_rss_mb()

    target = n // 2
    body = json.loads((HOOKS / "05-ANNOTATION_UPDATED.json").read_text())["body"]
    body["annotation"].update(
        id=target,
        task=target,
        updated_at="2026-11-22T00:00:00.000000Z",
        result=[random_rect(random.Random(0), "Airplane", 0)],
    )
    body["task"].update(id=target, data={"image": f"s3://b/images/{target}.jpg"})
    label = Path(tmp) / "bucket/exports/1/yolo/labels" / f"{target}__{target}.txt"
    raw = orjson.dumps(body)
    start = time.perf_counter()
    admission.accept(GroupCommit(rt), admission.parse(raw), raw, 1)
    jobs.drain_project(1)
    per_task = time.perf_counter() - start
    assert label.read_text().startswith("0 "), "the label file was not updated"
    start = time.perf_counter()
    exports.write_aggregates(rt, 1)
    aggregates = time.perf_counter() - start
    manifest = (Path(tmp) / "bucket/exports/1/manifest.jsonl").read_bytes()
    assert b'"updated_at":"2026-11-22T00:00:00.000000Z"' in manifest
    return {
        "tasks": n,
        "first_build_s": round(first_build, 2),
        "full_rebuild_s": round(rebuild, 2),
        "one_change_per_task_s": round(per_task, 4),
        "per_task_over_rebuild": round(per_task / rebuild, 5),
        "aggregates_after_debounce_s": round(aggregates, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rebuild_peak_rss_mb": rebuild_peak,
    }


def _reset_peak_rss() -> None:
    """Linux: restart the process's peak-RSS count (VmHWM) from its current size."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> int:
    """Linux: the process's peak RSS since the last reset (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    for n in args.tasks:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
