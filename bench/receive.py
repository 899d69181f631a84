"""Receive latency and job coalescing through `annosync up` (gunicorn, SQLite, local bucket).

Sends N captured ANNOTATION_UPDATED deliveries (distinct versions of one annotation) from one
client, measures each request's latency, then waits until every delivery is applied and counts
the RQ drain jobs that did it. Usage: .venv/bin/python bench/receive.py [--n 1000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sync import launcher  # noqa: E402

FIXTURE = ROOT / "tests/fixtures/label-studio/webhooks/05-ANNOTATION_UPDATED.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        redis_proc, redis_url = launcher.start_private_redis(data_dir)
        port = launcher.free_port()
        secret = "bench-secret-123"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "ANNOSYNC_WEBHOOK_SECRET": secret,
            "LOG_LEVEL": "warning",
        }
        up = subprocess.Popen(
            [sys.executable, "-m", "sync.cli", "up", "--port", str(port), "--data-dir", tmp],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base)
            figures = _run(base, secret, args.n, data_dir, Redis.from_url(redis_url))
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(30)
            launcher.terminate([redis_proc])
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("annosync up did not become ready")


def _run(base: str, secret: str, n: int, data_dir: Path, redis: Redis) -> dict:
    template = json.loads(FIXTURE.read_text())["body"]
    bodies = []
    for i in range(n):
        body = copy.deepcopy(template)
        body["annotation"]["updated_at"] = (
            f"2026-11-22T01:{i // 6000:02d}:{i // 100 % 60:02d}.{i:06d}Z"
        )
        body["annotation"]["lead_time"] = i
        bodies.append(json.dumps(body).encode())
    http = requests.Session()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    latencies = []
    start = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        r = http.post(base + "/webhooks/label-studio/1", data=body, headers=headers)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 202, r.text
    sent_s = time.perf_counter() - start
    target = data_dir / "bucket" / "tasks" / "1.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            target.exists()
            and json.loads(target.read_text())["annotations"][0]["lead_time"] == n - 1
        ):
            break
        time.sleep(0.05)
    drained_s = time.perf_counter() - start
    latencies.sort()
    return {
        "deliveries": n,
        "receive_p50_ms": round(statistics.median(latencies), 2),
        "receive_p99_ms": round(latencies[int(0.99 * (n - 1))], 2),
        "receive_max_ms": round(latencies[-1], 2),
        "send_rate_per_s": round(n / sent_s, 1),
        "all_applied_after_s": round(drained_s, 2),
    }


if __name__ == "__main__":
    main()
