"""Shared fixtures: real Redis, real SQLite and PostgreSQL, the receiver over real HTTP."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path

import pytest
import requests
from redis import Redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from bench.stack import fresh_pg_database
from config.settings import load_settings
from handlers.app import create_app
from sync import db, jobs, launcher, media
from sync.models import Base
from sync.runtime import Runtime, set_runtime

# boto3 talks only to the test S3 server; never let real credentials near it.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)

FIXTURES = Path(__file__).parent / "fixtures" / "label-studio"
SECRET = "s3cr3t-test-secret"
PG_ADMIN_URL = os.environ.get("ANNOSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = tuple(Base.metadata.tables)  # every table, so a new one is never forgotten


def delivery(name: str) -> dict:
    """The body of a captured delivery, e.g. ``delivery("03-ANNOTATION_CREATED")``."""
    return json.loads((FIXTURES / "webhooks" / f"{name}.json").read_text())["body"]


def captured_sequence(with_payload_only: bool = True) -> list[tuple[str, dict]]:
    """The captured deliveries in arrival order, as (file stem, body)."""
    out = []
    for path in sorted((FIXTURES / "webhooks").glob("[0-9]*.json")):
        body = json.loads(path.read_text())["body"]
        if with_payload_only and set(body) == {"action"}:
            continue
        out.append((path.stem, body))
    return out


def pytest_configure(config) -> None:
    """SIGTERM ends the run like Ctrl-C: fixtures tear down (servers stopped, databases
    dropped) instead of the process vanishing with them still running."""

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


# -- Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """This run's own Redis: a private redis-server (tests flush it at will, so a Redis that
    another suite or service uses is never touched), or ``ANNOSYNC_TEST_REDIS_URL`` when set.
    Without redis-server installed, the machine's Redis (db 13) is the fallback."""
    chosen = os.environ.get("ANNOSYNC_TEST_REDIS_URL")
    if chosen is None and shutil.which("redis-server") is None:
        chosen = "redis://127.0.0.1:6379/13"
    if chosen is not None:
        os.environ.setdefault("ANNOSYNC_BENCH_REDIS_URL", chosen.rsplit("/", 1)[0] + "/14")
        yield chosen
        return
    proc, private = launcher.start_private_redis(tmp_path_factory.mktemp("redis"))
    base = private.rsplit("/", 1)[0]
    # Production-shaped stacks (bench/stack.py) use db 1 of it, never the machine's db 10.
    previous = os.environ.get("ANNOSYNC_BENCH_REDIS_URL")
    os.environ["ANNOSYNC_BENCH_REDIS_URL"] = base + "/1"
    try:
        yield base + "/0"
    finally:
        if previous is None:
            os.environ.pop("ANNOSYNC_BENCH_REDIS_URL", None)
        else:
            os.environ["ANNOSYNC_BENCH_REDIS_URL"] = previous
        launcher.terminate([proc])


@pytest.fixture
def redis_url(redis_server):
    Redis.from_url(redis_server).flushdb()
    return redis_server


# -- Databases -----------------------------------------------------------------------------


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(db.normalise_url(PG_ADMIN_URL), connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this test session, migrated; dropped at the end."""
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    prefix = os.environ.get("ANNOSYNC_TEST_DB_PREFIX", "annosync_test")
    with fresh_pg_database(PG_ADMIN_URL, prefix) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'annosync.db'}"
        db.upgrade(url)
        return url
    url = request.getfixturevalue("pg_database")
    with db.make_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
    return url


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'annosync.db'}"
    db.upgrade(url)
    return url


# -- S3 (moto's server mode, over HTTP) -----------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=launcher.free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint):
    """A fresh bucket for this test: ``s3://annosync-test-…/prefix``."""
    import boto3

    name = f"annosync-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}/some/prefix"


# -- Settings, runtime, receiver, worker ----------------------------------------------------


def make_settings(tmp_path: Path, database_url: str, redis_url: str, **overrides):
    env = {
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
        "ANNOSYNC_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_SWEEP_INTERVAL_S": "0.2",
        "ANNOSYNC_EXPORT_DEBOUNCE_MS": "0",
        # Most tests' tasks name images on hosts that do not exist: media tests turn it on.
        "ANNOSYNC_MEDIA": "0",
    }
    return load_settings(env, **overrides)


@pytest.fixture
def settings(tmp_path, database_url, redis_url):
    return make_settings(tmp_path, database_url, redis_url)


@pytest.fixture
def runtime(settings):
    rt = Runtime(settings)
    set_runtime(rt)
    yield rt
    set_runtime(None)


class Receiver:
    """The Flask app served over real HTTP on a free loopback port."""

    def __init__(self, runtime: Runtime) -> None:
        self.app = create_app(runtime.settings, runtime)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.http = requests.Session()

    def post(
        self,
        body,
        path: str = "/webhooks/label-studio",
        secret: str | None = SECRET,
        headers: dict | None = None,
        raw: bytes | None = None,
    ) -> requests.Response:
        hdrs = {"Content-Type": "application/json"}
        if secret is not None:
            hdrs["Authorization"] = f"Bearer {secret}"
        hdrs.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(self.base + path, data=data, headers=hdrs, timeout=10)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.base + path, timeout=10, **kwargs)

    def close(self) -> None:
        self.server.shutdown()
        self.http.close()
        self.app.config["ARCHIVES"].close()


@pytest.fixture
def receiver(runtime):
    r = Receiver(runtime)
    yield r
    r.close()


@pytest.fixture
def drain_jobs(monkeypatch) -> list[int]:
    """The project keys of the drain jobs run from now on (workers of this process)."""
    started: list[int] = []
    drain = jobs.drain_project

    @functools.wraps(drain)  # enqueued by name: RQ finds this under drain's own name
    def counted(project_key: int):
        started.append(project_key)
        return drain(project_key)

    monkeypatch.setattr(jobs, "drain_project", counted)
    return started


def run_worker(rt: Runtime) -> None:
    """Run queued jobs in this process until the queue is empty (RQ burst mode), then the
    media that are due (a worker's media thread does that in production).

    An RQ worker installs its own SIGINT/SIGTERM handlers (a first Ctrl-C asks it to stop
    after the job) and leaves them installed: the test run's handlers are put back, and a
    stop asked for meanwhile interrupts the run."""
    set_runtime(rt)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = SimpleWorker([rt.settings.queue_name], connection=rt.worker_redis)
    stop_requested = False
    try:
        worker.work(burst=True, logging_level="WARNING")
    except StopRequested:  # RQ raised from its handler outside its own loop
        stop_requested = True
    finally:
        stop_requested = stop_requested or launcher.stop_was_requested(worker)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop_requested:  # while idle RQ ends work() normally: the signal must not be lost
        raise KeyboardInterrupt
    if rt.settings.media:
        media.run_due(rt)


def bucket(rt: Runtime) -> Path:
    return Path(rt.settings.storage_url.removeprefix("file://"))


def task_file(rt: Runtime, task_id: int) -> dict | None:
    path = bucket(rt) / "tasks" / f"{task_id}.json"
    return json.loads(path.read_text()) if path.exists() else None
