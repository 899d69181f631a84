"""Scale-out: receivers and workers as separate processes sharing PostgreSQL, Redis and an S3
server that answers every request after ~20 ms (real S3 latency, not CPU, dominates a
worker's time), under a burst of annotation updates over many tasks and projects.

For each worker count: a fresh database, Redis and bucket; the projects' tasks imported
first; then the burst sent to the receivers in turn (16 connections) and the clock stopped
once every project's manifest shows every task at its newest update (applied and exported).
Then the bucket is checked: newest wins for every task, no object lost or extra.

Usage: .venv/bin/python bench/scale_out.py [--workers 1 2 4] [--deliveries 10000]
       [--tasks 1000] [--projects 5] [--receivers 2] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import orjson
import requests
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import CREATED, PROJECT, UPDATED  # noqa: E402
from bench.slow_s3 import requests_served, slow_s3  # noqa: E402
from bench.stack import PG_ADMIN, SECRET, PrivateRedis, fresh_pg_database, wait_ready  # noqa: E402
from sync import db, launcher  # noqa: E402

BUCKET, PREFIX = "annosync-scale", "bucket"
GOALS = {"speedup_1_to_2": 1.6, "final_s_4_workers": 30.0}


@dataclass
class Burst:
    """The deliveries of a run and what the bucket must show afterwards."""

    imports: list[tuple[int, bytes]]  # (project, body)
    updates: list[tuple[int, bytes]]
    newest: dict[int, dict[int, tuple[int, str]]] = field(default_factory=dict)
    # project -> task -> (lead_time of its newest update, its updated_at)


def _stamp(seq: int) -> str:
    return (
        f"2026-11-22T{seq // 3_600_000 % 24:02d}:{seq // 60_000 % 60:02d}:"
        f"{seq // 1000 % 60:02d}.{seq % 1000:03d}000Z"
    )


def make_burst(deliveries: int, tasks: int, projects: int, seed: int = 7) -> Burst:
    """``deliveries`` annotation updates spread at random over ``tasks`` tasks in
    ``projects`` projects (each update newer than the one before), after one import per
    project. A task's annotation has the task's id."""
    rng = random.Random(seed)
    per_project = tasks // projects
    ids = {
        p: [p * 1_000_000 + i for i in range(1, per_project + 1)] for p in range(1, projects + 1)
    }
    burst = Burst(imports=[], updates=[])
    for project, task_ids in ids.items():
        rows = [{**CREATED["tasks"][0], "id": i, "inner_id": i, "project": project,
                 "data": {"image": f"s3://b/{i}.jpg"}} for i in task_ids]  # fmt: skip
        body = {"action": "TASKS_CREATED", "tasks": rows, "project": {**PROJECT, "id": project}}
        burst.imports.append((project, orjson.dumps(body)))
        burst.newest[project] = {}
    everything = [(p, t) for p, task_ids in ids.items() for t in task_ids]
    for seq in range(1, deliveries + 1):
        project, task_id = rng.choice(everything)
        body = copy.deepcopy(UPDATED)
        stamp = _stamp(seq)
        body["annotation"].update(id=task_id, task=task_id, lead_time=seq, updated_at=stamp,
                                  project=project)  # fmt: skip
        body["annotation"]["result"][0]["value"]["x"] = float(seq % 60)
        body["task"].update(id=task_id, project=project, data={"image": f"s3://b/{task_id}.jpg"})
        body["project"] = {**PROJECT, "id": project}
        burst.updates.append((project, orjson.dumps(body)))
        burst.newest[project][task_id] = (seq, stamp)
    return burst


@dataclass
class ScaleStack:
    bases: list[str]
    env: dict[str, str]
    s3: object
    workers: list[subprocess.Popen]
    db_url: str
    endpoint: str = ""
    receivers: list[subprocess.Popen] = field(default_factory=list)
    redis: PrivateRedis | None = None

    def costs(self) -> dict[str, float]:
        """Counters of the shared services and the processes' CPU, to difference: S3
        requests, PostgreSQL commits and rows written, Redis commands, CPU seconds."""
        with create_engine(db.normalise_url(self.db_url), poolclass=NullPool).connect() as conn:
            commits, rows = conn.execute(text(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
                "FROM pg_stat_database WHERE datname = current_database()"
            )).one()  # fmt: skip
        redis = Redis.from_url(self.env["REDIS_URL"])
        return {
            "s3_requests": sum(requests_served(self.endpoint).values()),
            "pg_commits": commits,
            "pg_rows": rows,
            "redis_commands": redis.info("stats")["total_commands_processed"],
            "receiver_cpu_s": sum(_cpu_s(p.pid) for p in self.receivers),
            "worker_cpu_s": sum(_cpu_s(p.pid) for p in self.workers),
        }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def scale_stack(
    workers: int, receivers: int = 2, latency_ms: float = 20, pg_admin: str = PG_ADMIN
) -> Iterator[ScaleStack]:
    """``receivers`` ``annosync serve`` and ``workers`` ``annosync worker`` processes on a fresh
    PostgreSQL database, a private Redis and a slow S3 server."""
    tmp = Path(tempfile.mkdtemp(prefix="annosync-scale-"))
    procs: list[subprocess.Popen] = []
    handle: ScaleStack | None = None
    redis = PrivateRedis(tmp)
    try:
        with (
            fresh_pg_database(pg_admin, "annosync_scale") as db_url,
            slow_s3(launcher.free_port(), latency_ms) as endpoint,
        ):
            s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
            s3.create_bucket(Bucket=BUCKET)
            env = {
                **os.environ,
                "ANNOSYNC_DATA_DIR": str(tmp),
                "ANNOSYNC_DATABASE_URL": db_url,
                "REDIS_URL": redis.url,
                "ANNOSYNC_STORAGE_URL": f"s3://{BUCKET}/{PREFIX}",
                "ANNOSYNC_S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "ANNOSYNC_WEBHOOK_SECRET": SECRET,
                "ANNOSYNC_MEDIA": "0",
                "ANNOSYNC_SWEEP_INTERVAL_S": "1",
                "LOG_LEVEL": os.environ.get("ANNOSYNC_BENCH_LOG_LEVEL", "warning"),
            }
            ports = [launcher.free_port() for _ in range(receivers)]
            serving = [_start(["serve", "--port", str(p)], env, tmp, f"serve-{p}") for p in ports]
            procs += serving
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for base in bases:
                wait_ready(base + "/readyz")
            started = [_start(["worker"], env, tmp, f"worker-{n}") for n in range(workers)]
            handle = ScaleStack(bases, env, s3, started, db_url, endpoint, serving, redis)
            yield handle
    finally:
        # the workers are the handle's: a caller may start them later (the drain-only run)
        launcher.terminate(procs + (handle.workers if handle else []))
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def start_worker(s: ScaleStack, name: str) -> subprocess.Popen:
    """One more ``annosync worker`` on the stack (stopped with it)."""
    worker = _start(["worker"], s.env, Path(s.env["ANNOSYNC_DATA_DIR"]), name)
    s.workers.append(worker)
    return worker


def _start(argv: list[str], env: dict, tmp: Path, name: str) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 (the process writes it until stopped)
    return subprocess.Popen([sys.executable, "-m", "sync.cli", *argv], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def send(bases: list[str], bodies: list[tuple[int, bytes]], connections: int = 16) -> None:
    """POST every body once, to the receivers in turn, ``connections`` at a time; every
    answer must be 202."""
    local = threading.local()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}

    def post(item: tuple[int, tuple[int, bytes]]) -> None:
        n, (project, body) = item
        if not hasattr(local, "http"):
            local.http = requests.Session()
        url = f"{bases[n % len(bases)]}/webhooks/label-studio/{project}"
        answer = local.http.post(url, data=body, headers=headers, timeout=30)
        if answer.status_code != 202:
            raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:200]}")

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, enumerate(bodies)))


def _get(s3, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def final(s: ScaleStack, burst: Burst) -> bool:
    """Whether every project's manifest shows each task at its newest update."""
    for project, newest in burst.newest.items():
        manifest = _get(s.s3, f"exports/{project}/manifest.jsonl")
        if manifest is None:
            return False
        stamps = {}
        for line in manifest.splitlines():
            item = orjson.loads(line)
            stamps[item["task_id"]] = item["updated_at"]
        if any(stamps.get(task) != stamp for task, (_seq, stamp) in newest.items()):
            return False
    return True


def wait_final(s: ScaleStack, burst: Burst, timeout_s: float) -> float:
    start = time.perf_counter()
    while not final(s, burst):
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"not final after {timeout_s} s")
        if any(w.poll() is not None for w in s.workers):
            raise RuntimeError("a worker exited")
        time.sleep(0.2)
    return time.perf_counter() - start


def problems(s: ScaleStack, burst: Burst) -> list[str]:
    """What in the bucket differs from what the deliveries say: a task file missing, extra,
    or not at its newest annotation; a label file missing or extra."""
    found = []
    keys = set()
    for page in s.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
        keys |= {item["Key"][len(PREFIX) + 1 :] for item in page.get("Contents", [])}
    imported = {task["id"] for _p, body in burst.imports for task in orjson.loads(body)["tasks"]}
    tasks = {int(k[6:-5]) for k in keys if k.startswith("tasks/") and k.endswith(".json")}
    if tasks != imported:
        found.append(f"task files: {len(tasks ^ imported)} missing or extra")
    for project, newest in burst.newest.items():
        for task_id, (seq, _stamp) in newest.items():
            doc = orjson.loads(_get(s.s3, f"tasks/{task_id}.json") or b"{}")
            leads = [a.get("lead_time") for a in doc.get("annotations", [])]
            if leads != [seq]:
                found.append(f"task {task_id}: annotations {leads}, expected [{seq}]")
        labels = {k for k in keys if k.startswith(f"exports/{project}/yolo/labels/")}
        want = sum(1 for t in imported if t // 1_000_000 == project)
        if len(labels) != want:
            found.append(f"project {project}: {len(labels)} YOLO label files, expected {want}")
    return found


def run(workers: int, deliveries: int, tasks: int, projects: int, receivers: int = 2,
        latency_ms: float = 20, timeout_s: float = 600) -> dict:  # fmt: skip
    """Two figures: the burst sent while the workers drain (what a user sees: the time until
    a burst is in the exports), and the drain alone (the burst recorded with the workers
    stopped, then timed from their start: the workers' own throughput, without the
    sender and the receivers competing for this machine's CPU)."""
    burst = make_burst(deliveries, tasks, projects)
    with scale_stack(workers, receivers, latency_ms) as s:
        send(s.bases, burst.imports)
        deadline = time.monotonic() + timeout_s
        while not all(_get(s.s3, f"exports/{p}/manifest.jsonl") for p in burst.newest):
            if time.monotonic() > deadline:
                raise TimeoutError("the imports were not exported")
            time.sleep(0.2)
        time.sleep(2)  # the imports' aggregates and the start-up resync settle
        before = s.costs()
        start = time.perf_counter()
        send(s.bases, burst.updates)
        sent = time.perf_counter() - start
        settled = wait_final(s, burst, timeout_s) + sent
        time.sleep(1)  # PostgreSQL publishes its statistics within a second
        after = s.costs()
        wrong = problems(s, burst)
    drain = make_burst(deliveries, tasks, projects, seed=8)
    with scale_stack(0, receivers, latency_ms) as s:  # recorded first, no worker running
        send(s.bases, drain.imports)
        send(s.bases, drain.updates)
        start = time.perf_counter()
        s.workers[:] = [_start(["worker"], s.env, Path(s.env["ANNOSYNC_DATA_DIR"]), f"w{n}")
                        for n in range(workers)]  # fmt: skip
        wait_final(s, drain, timeout_s)
        drained = time.perf_counter() - start
        wrong += problems(s, drain)
    return {
        "workers": workers,
        "receivers": receivers,
        "deliveries": deliveries,
        "sent_s": round(sent, 2),
        "final_s": round(settled, 2),
        "per_s": round(deliveries / settled),
        "drain_only_s": round(drained, 2),
        "per_delivery": {k: round((after[k] - before[k]) / deliveries, 4) for k in after},
        "problems": wrong,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20)
    args = parser.parse_args()
    results = []
    head = f"{'workers':>7}  {'sent s':>7}  {'final s':>8}  {'deliveries/s':>12}  {'speed-up':>8}"
    print(head + f"  {'drain only s':>12}  {'speed-up':>8}  problems")
    for n in args.workers:
        r = run(n, args.deliveries, args.tasks, args.projects, args.receivers, args.latency_ms)
        results.append(r)
        speedup = results[0]["final_s"] / r["final_s"]
        drain_up = results[0]["drain_only_s"] / r["drain_only_s"]
        print(f"{n:>7}  {r['sent_s']:>7}  {r['final_s']:>8}  {r['per_s']:>12}  "
              f"{speedup:>7.2f}x  {r['drain_only_s']:>12}  {drain_up:>7.2f}x  "
              f"{len(r['problems'])}", flush=True)  # fmt: skip
        for line in r["problems"][:5]:
            print("         " + line)
    print("\nper delivery (the 4-worker run's costs are what docs/scaling.md quotes):")
    for r in results:
        costs = ", ".join(f"{k} {v}" for k, v in r["per_delivery"].items())
        print(f"  {r['workers']} workers: {costs}")
    out = ROOT / "bench/results/scale_out.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 0 if not any(r["problems"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
