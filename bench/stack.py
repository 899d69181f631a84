"""A production-shaped annosync for benchmarks: the receiver (on waitress, or the gunicorn
arrangement it replaced, see ``bench/servers.py``), RQ workers, a database (SQLite file or a
fresh PostgreSQL database), Redis, a local bucket. Loopback only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402
from sync import db, launcher  # noqa: E402

SECRET = "bench-secret-123456"
PG_ADMIN = os.environ.get("ANNOSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Set to a folder to keep the receiver's and workers' logs (diagnosing a failed fault test).
LOG_DIR = os.environ.get("ANNOSYNC_BENCH_LOG_DIR")


def _log_sink(name: str):
    """Where a stack process writes its output: a file under LOG_DIR, or nowhere."""
    if not LOG_DIR:
        return subprocess.DEVNULL
    Path(LOG_DIR).mkdir(parents=True, exist_ok=True)
    return open(
        Path(LOG_DIR) / f"{name}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}.log", "ab"
    )


def wait_ready(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@contextmanager
def database(kind: str, tmp: Path, pg_admin: str | None = None, tree: Path = ROOT):
    """A database URL migrated by the code of ``tree``: ``sqlite`` (a file) or
    ``postgresql`` (created, dropped, on the server of ``pg_admin``, default
    ``ANNOSYNC_TEST_PG_URL``)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
        migrate(url, tree)
        yield url
        return
    with fresh_pg_database(pg_admin or PG_ADMIN, "annosync_bench", tree) as url:
        yield url


def migrate(url: str, tree: Path = ROOT) -> None:
    """Bring ``url`` to the newest schema of the code in ``tree``."""
    if tree == ROOT:
        db.upgrade(url)
        return
    code = "import sys; from sync import db; db.upgrade(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, url], cwd=tree, check=True)


@contextmanager
def fresh_pg_database(admin_url: str, prefix: str, tree: Path = ROOT):
    """A new, migrated PostgreSQL database (its URL), dropped afterwards, for a benchmark
    run or a test session."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        db.normalise_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url, tree)
        yield url
    finally:
        db.make_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivateRedis:
    """A redis-server of our own, which a fault test may stop and start again (empty)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc, self.url = launcher.start_private_redis(tmp)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        launcher.terminate([self.proc])

    def start(self) -> None:
        self.proc, _ = launcher.start_private_redis(self.tmp, port=self.port)


@contextmanager
def redis_server(tmp: Path, private: bool = False):
    """``ANNOSYNC_BENCH_REDIS_URL`` when set (flushed: it must be a Redis database of this
    run's own, as the test suite's private server is), else a private redis-server."""
    url = os.environ.get("ANNOSYNC_BENCH_REDIS_URL")
    if url and not private and launcher.redis_reachable(url):
        Redis.from_url(url).flushdb()
        yield url, None
        return
    server = PrivateRedis(tmp)
    try:
        yield server.url, server
    finally:
        server.stop()


class Stack:
    """Handles of a running stack."""

    def __init__(self, base: str, env: dict, bucket: Path, redis_url: str, tree: Path = ROOT):
        self.base, self.env, self.bucket, self.tree = base, env, bucket, tree
        self.redis = Redis.from_url(redis_url)
        self.workers: list[subprocess.Popen] = []

    def start_workers(self, n: int) -> None:
        for _ in range(n):
            sink = _log_sink("worker")
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sync.cli", "worker"],
                    env=self.env,
                    cwd=self.tree,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )

    def stop_workers(self) -> None:
        launcher.terminate(self.workers)
        self.workers = []

    def headers(self) -> dict:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}


@contextmanager
def stack(
    kind: str,
    workers: int = 1,
    receivers: int = 2,
    debounce_ms: int = 500,
    private_redis: bool = False,
    extra_env: dict | None = None,
    server: str = "waitress",
    pg_admin: str | None = None,
    tree: Path = ROOT,
):
    """The receiver on ``server`` (gunicorn: ``receivers`` processes) plus ``workers`` RQ
    workers, running the code of ``tree`` (a checkout of annosync; default: this one)."""
    tmp = Path(tempfile.mkdtemp(prefix="annosync-bench-"))
    try:
        with (
            database(kind, tmp, pg_admin, tree) as url,
            redis_server(tmp, private_redis) as (redis_url, rs),
        ):
            port = launcher.free_port()
            env = {
                **os.environ,
                "ANNOSYNC_DATA_DIR": str(tmp),
                "ANNOSYNC_DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "ANNOSYNC_WEBHOOK_SECRET": SECRET,
                "ANNOSYNC_EXPORT_DEBOUNCE_MS": str(debounce_ms),
                "LOG_LEVEL": "info" if LOG_DIR else "warning",
                "ANNOSYNC_SWEEP_INTERVAL_S": "1",
                **(extra_env or {}),
            }
            command = servers.command(server, port, workers=receivers)
            sink = _log_sink("receiver")
            receiver = subprocess.Popen(
                command, env=env, cwd=tree, stdout=sink, stderr=subprocess.STDOUT
            )
            handle = Stack(f"http://127.0.0.1:{port}", env, tmp / "bucket", redis_url, tree)
            handle.redis_server = rs
            try:
                wait_ready(handle.base + "/readyz")
                handle.start_workers(workers)
                yield handle
            finally:
                handle.stop_workers()
                launcher.terminate([receiver])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def bare_endpoint(receivers: int = 2, server: str = "waitress"):
    """A Flask endpoint that answers 200 and does nothing, on the same server settings."""
    port = launcher.free_port()
    command = servers.command(server, port, app="bench.bare_app:app", workers=receivers)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        launcher.terminate([proc])
