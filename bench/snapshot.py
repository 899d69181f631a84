"""Export snapshot of a big project: peak memory of the job that makes it, and the time to
the first byte of its download (issue 18: 100k tasks, < 300 MB, < 2 s).

The project's generation is built directly (task files as content-addressed objects, a
manifest, an index, the database rows), as the pipeline would have left it, so the figure is
the snapshot's alone; then a fresh process makes the snapshot and reports its peak RSS, and the
receiver (waitress, as in production) serves the download.

Usage: .venv/bin/python bench/snapshot.py [--tasks 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import SECRET, wait_ready  # noqa: E402
from config.settings import load_settings  # noqa: E402
from sync import db, documents, generations, launcher, task_file  # noqa: E402
from sync.models import Generation, GenerationObject, Snapshot  # noqa: E402
from sync.runtime import Runtime  # noqa: E402

TOKEN = "bench-token"
MAKE = """
import resource, sys, time
from config.settings import load_settings
from sync import snapshots
from sync.runtime import Runtime
started = time.perf_counter()
snapshots.make(Runtime(load_settings()), int(sys.argv[1]))
print(round(time.perf_counter() - started, 2),
      round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


def _task(n: int) -> bytes:
    box = {"x": n % 80, "y": 5, "width": 10, "height": 8, "rotation": 0, "rectanglelabels": ["Car"]}
    region = {"id": f"r{n}", "type": "rectanglelabels", "from_name": "bbox", "to_name": "image",
              "original_width": 1280, "original_height": 720, "value": box}  # fmt: skip
    doc = {"id": n, "data": {"image": f"http://example.com/img/{n}.jpg"}, "meta": {},
           "annotations": [{"id": n, "result": [region], "was_cancelled": False,
                            "ground_truth": False, "completed_by": 1,
                            "created_at": "2026-11-30T00:00:00.000000Z",
                            "updated_at": "2026-11-30T00:00:00.000000Z"}],
           "drafts": [], "predictions": [], "total_annotations": 1,
           "cancelled_annotations": 0}  # fmt: skip
    return task_file.encode_task(doc)


def build(rt: Runtime, tasks: int) -> None:
    """Generation 1 of project 1 with ``tasks`` task files, as a capture leaves it."""
    files, rows, batch = [], [], []
    for n in range(1, tasks + 1):
        raw = _task(n)
        digest = hashlib.sha256(raw).hexdigest()
        batch.append((generations.object_key(1, digest), raw))
        files.append({"path": documents.task_key(n), "sha256": digest, "size": len(raw),
                      "format": generations.TASKS})  # fmt: skip
        rows.append({"project_id": 1, "sha256": digest, "size": len(raw)})
        if len(batch) == 2000:
            rt.storage.put_many(batch)
            batch = []
    rt.storage.put_many(batch)
    files.sort(key=lambda f: f["path"])
    manifest = {"project": 1, "generation": 1, "created_at": "2026-11-30T00:00:00Z",
                "label_config_sha256": None, "formats": [], "split": [["train", 1.0]],
                "counts": {"tasks": tasks, "annotations": tasks, "files": tasks,
                           "bytes": sum(f["size"] for f in files)}, "files": files}  # fmt: skip
    raw = orjson.dumps(manifest)
    rt.storage.put(generations.manifest_key(1, 1), raw)
    now = datetime.now(UTC)
    row = Generation(project_id=1, number=1, created_at=now, manifest_sha256=hashlib.sha256(raw)
                     .hexdigest(), tasks=tasks, annotations=tasks, files=tasks,
                     bytes=manifest["counts"]["bytes"])  # fmt: skip
    listing = [{"generation": 1, "created_at": "2026-11-30T00:00:00Z",
                "sha256": row.manifest_sha256, "counts": manifest["counts"]}]  # fmt: skip
    rt.storage.put(generations.index_key(1), orjson.dumps(listing))
    with rt.sessions() as session:
        session.add(row)
        session.execute(GenerationObject.__table__.insert(), rows)
        session.add(Snapshot(project_id=1, title="bench", status="created", generation=1,
                             options=json.dumps({"task_filter_options": {},
                                                 "annotation_filter_options": {},
                                                 "serialization_options": {}}),
                             created_at=now))  # fmt: skip
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="annosync-bench-snapshot-"))
    redis_proc, redis_url = launcher.start_private_redis(tmp)
    env = {"ANNOSYNC_DATA_DIR": str(tmp), "REDIS_URL": redis_url, "ANNOSYNC_API_TOKEN": TOKEN,
           "ANNOSYNC_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "warning"}  # fmt: skip
    settings = load_settings(env)
    db.upgrade(settings.database_url)
    rt = Runtime(settings)
    started = time.perf_counter()
    build(rt, args.tasks)
    print(f"built generation 1 with {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
    full_env = {**os.environ, **env}
    made = subprocess.run([sys.executable, "-c", MAKE, "1"], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    seconds, rss = made.stdout.split()
    print(f"snapshot made in {seconds} s, peak RSS of the process {rss} MB")
    port = launcher.free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "handlers.serve", "--port", str(port)],
                                cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/api/projects/1/exports/1/download?exportType=JSON"
        started = time.perf_counter()
        with requests.get(url, headers={"Authorization": f"Token {TOKEN}"}, stream=True,
                          timeout=60) as response:  # fmt: skip
            chunks = response.iter_content(1 << 16)
            first = next(chunks)
            first_byte = time.perf_counter() - started
            size = len(first) + sum(len(c) for c in chunks)
        total = time.perf_counter() - started
        print(f"download: first byte {first_byte * 1000:.0f} ms, {size / 1e6:.0f} MB in "
              f"{total:.1f} s (status {response.status_code})")  # fmt: skip
    finally:
        launcher.terminate([receiver, redis_proc])


if __name__ == "__main__":
    main()
