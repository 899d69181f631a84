"""The status page on 1,000 projects: how long the overview takes to answer.

Fills a fresh SQLite database with 1,000 projects (10 tasks, 10 annotations and 20 applied
deliveries each, 5 failed deliveries in every tenth project), signs in, and times
``GET /status`` and one project's page through the Flask app (no network: the figure is the
server's work). Usage: .venv/bin/python bench/status_page.py [--projects 1000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from handlers.app import create_app  # noqa: E402
from sync import db  # noqa: E402
from sync.models import Annotation, Delivery, Project, Task  # noqa: E402
from sync.runtime import Runtime  # noqa: E402

TOKEN = "bench-status-page-token"


def fill(rt: Runtime, projects: int) -> None:
    now = datetime.now(UTC)
    rows = {Project: [], Task: [], Annotation: [], Delivery: []}
    for p in range(1, projects + 1):
        rows[Project].append({"id": p, "title": f"Project {p}", "export_generation": 3})
        for t in range(10):
            task_id = p * 100 + t
            rows[Task].append({"id": task_id, "project_id": p, "body": b"{}", "dirty": False})
            rows[Annotation].append({"id": task_id, "task_id": task_id, "project_id": p,
                                     "body": b"{}"})  # fmt: skip
        for d in range(20 + (5 if p % 10 == 0 else 0)):
            status = "failed" if d >= 20 else "applied"
            error = "boom" if status == "failed" else None
            rows[Delivery].append({"action": "ANNOTATION_UPDATED", "project_id": p, "body": b"{}",
                                   "status": status, "received_at": now, "attempts": 1,
                                   "last_error": error})  # fmt: skip
    with rt.engine.begin() as conn:
        for model, values in rows.items():
            conn.execute(model.__table__.insert(), values)


def timed(client, path: str, rounds: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.status_code
        size = len(answer.data)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        env = {"ANNOSYNC_DATA_DIR": tmp, "ANNOSYNC_DATABASE_URL": url,
               "ANNOSYNC_API_TOKEN": TOKEN, "REDIS_URL": "redis://127.0.0.1:9/0"}  # fmt: skip
        settings = load_settings(env)
        db.upgrade(url)
        rt = Runtime(settings)
        fill(rt, args.projects)
        client = create_app(settings, rt).test_client()
        client.post("/status/login", data={"token": TOKEN})
        print(f"{'page':<28}{'median ms':>10}{'KiB':>8}")
        for path in ("/status", f"/status/projects/{args.projects}"):
            ms, size = timed(client, path, args.rounds)
            print(f"{path:<28}{ms:>10.1f}{size / 1024:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
