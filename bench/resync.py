"""Time to resync a project (bucket already right, and bucket empty), local and S3 (moto).

Usage: .venv/bin/python bench/resync.py [--tasks 10000] [--s3]
Needs a reachable Redis (REDIS_URL, default the machine's; the lock lives there).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from sync import db, events, jobs  # noqa: E402
from sync.reconcile import resync_project  # noqa: E402
from sync.runtime import Runtime  # noqa: E402

HOOKS = ROOT / "tests/fixtures/label-studio/webhooks"


def _populate(rt: Runtime, n: int) -> None:
    created = json.loads((HOOKS / "01-TASKS_CREATED.json").read_text())["body"]
    annotated = json.loads((HOOKS / "07-ANNOTATION_CREATED.json").read_text())["body"]
    tasks = []
    for i in range(1, n + 1):
        task = copy.deepcopy(created["tasks"][0])
        task.update(id=i, inner_id=i, data={"image": f"s3://images/{i}.jpg"})
        tasks.append(task)
    with rt.sessions() as session:
        for start in range(0, n, 5000):
            events.apply(session, {**created, "tasks": tasks[start : start + 5000]}, 1)
        for i in range(1, n + 1):
            body = copy.deepcopy(annotated)
            body["annotation"].update(id=i, task=i)
            body["task"].update(id=i, data=tasks[i - 1]["data"])
            events.apply(session, body, 1)
        session.commit()
    jobs.write_dirty_tasks(rt, 1)


def _time(label: str, func) -> float:
    start = time.perf_counter()
    summary = func()
    elapsed = time.perf_counter() - start
    print(f"{label:40s} {elapsed:7.2f} s   {summary.line()}")
    return elapsed


def run(storage_url: str, endpoint: str | None, n: int, tmp: str) -> dict:
    url = f"sqlite:///{tmp}/bench.db"
    db.upgrade(url)
    env = {
        "ANNOSYNC_DATA_DIR": tmp,
        "ANNOSYNC_DATABASE_URL": url,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12"),
        "ANNOSYNC_STORAGE_URL": storage_url,
    }
    rt = Runtime(load_settings(env, s3_endpoint_url=endpoint))
    start = time.perf_counter()
    _populate(rt, n)
    print(f"populate {n} tasks + annotations + files: {time.perf_counter() - start:.2f} s")
    kind = storage_url.split(":")[0]
    right = _time(f"{kind}: resync, bucket already right", lambda: resync_project(rt, 1))
    for key in list(rt.storage.list("tasks/")):
        rt.storage.delete(key)
    empty = _time(f"{kind}: resync, bucket empty", lambda: resync_project(rt, 1))
    return {
        "storage": kind,
        "tasks": n,
        "bucket_right_s": round(right, 2),
        "bucket_empty_s": round(empty, 2),
    }


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--s3", action="store_true", help="also against moto's S3 server")
    args = parser.parse_args()
    results = []
    tmp = tempfile.mkdtemp()
    try:
        results.append(run(Path(tmp, "bucket").as_uri(), None, args.tasks, tmp + "/l"))
        if args.s3:
            import boto3
            from moto.server import ThreadedMotoServer

            from sync.launcher import free_port

            os.environ.update(
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
            )
            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
            results.append(run("s3://bench/p", endpoint, args.tasks, tmp + "/s"))
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
