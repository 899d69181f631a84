"""The receiver under hostile load, on the production server (``python -m handlers.serve``).

Loopback only; every loop is bounded in count and time. Each scenario holds attackers open
while valid deliveries arrive one connection each (as Label Studio sends them) and checks
that every one is answered 202 in time and recorded.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests
from sqlalchemy import func, select

from sync import db
from sync.models import Delivery
from sync.runtime import Runtime
from tests.conftest import delivery, make_settings, run_worker
from tests.served import (
    HEADERS,
    close_all,
    hammer_exports,
    open_idle,
    open_slow_headers,
    percentile,
    port_of,
    post,
    receiver_env,
    served,
    trickle,
    update_body,
)

pytestmark = pytest.mark.hostile
TOKEN = "api-token-0123456789"


@pytest.fixture(autouse=True)
def enough_files():
    """This process holds over a thousand sockets in these tests."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if min(wanted, hard) < 1300:
        pytest.skip(f"open-file hard limit {hard} is below the 1,300 sockets these tests hold")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _recorded(database_url: str) -> int:
    with db.make_engine(database_url).connect() as conn:
        query = select(func.count()).select_from(Delivery).where(Delivery.status != "rejected")
        return conn.execute(query).scalar_one()


def _paced(base: str, count: int, rate: float, first_seq: int) -> list[tuple[int, float]]:
    """``count`` distinct deliveries at ``rate``/s, each on a new connection, from a pool so
    that a slow answer never delays the next send; (status, seconds) of each."""
    results: list[tuple[int, float]] = []

    def one(seq: int) -> None:
        try:
            response, took = post(base, update_body(seq), timeout=5)
            results.append((response.status_code, took))
        except requests.RequestException:
            results.append((0, 5.0))

    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            pool.submit(one, first_seq + n)
    return results


@pytest.mark.timing
def test_idle_and_slow_header_connections_never_starve_deliveries(
    tmp_path, database_url, redis_url
):
    with served(receiver_env(tmp_path, database_url, redis_url)) as base:
        port = port_of(base)
        idle = open_idle(port, 1000)
        slow = open_slow_headers(port, 100)
        # Held open from here: the server has taken them all once it answers (accepting a
        # thousand at once costs its loop about a second).
        requests.get(base + "/healthz", timeout=10)
        stop = threading.Event()

        def keep_trickling() -> None:
            while not stop.wait(5):
                trickle(slow)

        trickler = threading.Thread(target=keep_trickling, daemon=True)
        trickler.start()
        try:
            results = _paced(base, 200, 20, first_seq=1)
        finally:
            stop.set()
            trickler.join()
            close_all(idle)
            close_all(slow)
        statuses = [status for status, _ in results]
        latencies = [took for _, took in results]
        assert statuses == [202] * 200, sorted(set(statuses))
        assert max(latencies) < 1.0, max(latencies)
        assert percentile(latencies, 0.99) <= 0.25, percentile(latencies, 0.99)
        assert _recorded(database_url) == 200
        started = time.perf_counter()
        assert requests.get(base + "/healthz", timeout=1).status_code == 200
        assert time.perf_counter() - started < 1.0


@pytest.mark.timing
def test_service_is_back_at_once_after_connections_past_the_limit_leave(
    tmp_path, database_url, redis_url
):
    env = receiver_env(tmp_path, database_url, redis_url, ANNOSYNC_HTTP_CONNECTION_LIMIT="200")
    with served(env) as base:
        idle = open_idle(port_of(base), 400)  # twice the cap: the rest wait in the backlog
        try:
            with pytest.raises(requests.Timeout):
                requests.get(base + "/healthz", timeout=0.5)
        finally:
            close_all(idle)
        started = time.perf_counter()
        assert requests.get(base + "/healthz", timeout=2).status_code == 200
        assert time.perf_counter() - started < 1.0
        assert post(base, update_body(1))[0].status_code == 202


def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path, database_url, redis_url):
    env = receiver_env(tmp_path, database_url, redis_url, ANNOSYNC_HTTP_IDLE_TIMEOUT_S="1")
    with served(env) as base:
        (slow,) = open_slow_headers(port_of(base), 1)
        slow.settimeout(6)
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 5
        slow.close()


def test_a_poison_delivery_fails_alone_amid_valid_ones(tmp_path, database_url, redis_url):
    """Ids at or past 2**63 (URL, or body of an unknown action) amid 280 valid deliveries:
    every valid one is answered 202 and recorded, every poison one 400."""
    huge = 2**63
    poisons = [
        (
            orjson.dumps({"action": "SOMETHING_NEW", "project": {"id": huge}}),
            "/webhooks/label-studio",
        ),
        (orjson.dumps({"action": "SOMETHING_NEW", "project": huge}), "/webhooks/label-studio"),
        (update_body(10_000), f"/webhooks/label-studio/{huge}"),
    ]
    sends = [(update_body(seq), "/webhooks/label-studio/1", False) for seq in range(1, 281)]
    for n in range(30):  # spread through the group commits
        sends.insert(7 + n * 9, (*poisons[n % 3], True))
    env = receiver_env(tmp_path, database_url, redis_url)
    with served(env) as base, ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda s: post(base, s[0], s[1])[0], sends))
    for (_, path, poison), answer in zip(sends, answers, strict=True):
        assert answer.status_code == (400 if poison else 202), (path, answer.text)
    assert _recorded(database_url) == 280


def _import_tasks(base: str, first: int, count: int) -> None:
    created = delivery("01-TASKS_CREATED")
    tasks = [
        {**created["tasks"][0], "id": i, "inner_id": i, "data": {"image": f"s3://b/{i}.jpg"}}
        for i in range(first, first + count)
    ]
    body = orjson.dumps({"action": "TASKS_CREATED", "tasks": tasks, "project": created["project"]})
    assert post(base, body, timeout=60)[0].status_code == 202


@pytest.mark.timing
def test_exports_never_take_the_webhooks_capacity(tmp_path, database_url, redis_url):
    """16 clients asking again and again for exports of a 10k-task project while deliveries
    arrive at 20/s: the exports run at most ANNOSYNC_EXPORT_WORKERS at a time in their own
    processes (the others are told 429 + Retry-After), and deliveries keep p99 <= 250 ms."""
    env = receiver_env(
        tmp_path, database_url, redis_url, ANNOSYNC_API_TOKEN=TOKEN, ANNOSYNC_EXPORT_FORMATS=""
    )
    with served(env) as base:
        _import_tasks(base, 1, 5000)
        _import_tasks(base, 5001, 5000)
        rt = Runtime(make_settings(tmp_path, database_url, redis_url, export_formats=()))
        run_worker(rt)
        project = delivery("01-TASKS_CREATED")["project"]["id"]
        url = f"{base}/api/projects/{project}/export?exportType=JSON"
        hammer = hammer_exports(url, TOKEN, clients=16, seconds=120)
        # Measured once exports are in steady state: the first one also starts the export
        # processes (once per receiver, ~1 s of CPU each to import annosync).
        while (line := hammer.stdout.readline()) and line.strip() != "200":
            pass
        results = _paced(base, 100, 20, first_seq=1)
        hammer.stdin.close()  # stop asking
        summary = json.loads(hammer.stdout.read().strip().splitlines()[-1])
        hammer.wait(60)
    latencies = [took for _, took in results]
    assert [status for status, _ in results] == [202] * 100
    assert percentile(latencies, 0.99) <= 0.25, percentile(latencies, 0.99)
    assert summary["bad"] == []
    assert set(summary["outcomes"]) == {200, 429}, set(summary["outcomes"])


def test_an_oversize_body_gets_a_413_the_sender_reads(tmp_path, sqlite_url, redis_url):
    env = receiver_env(tmp_path, sqlite_url, redis_url, ANNOSYNC_MAX_BODY_BYTES="1000000")
    body = b'{"action": "X", "pad": "' + b"a" * 3_000_000 + b'"}'
    with served(env) as base:
        sized = requests.post(base + "/webhooks/label-studio/1", data=body, headers=HEADERS)
        assert sized.status_code == 413
        assert sized.json()["error"] == "payload_too_large"
        chunked = requests.post(
            base + "/webhooks/label-studio/1",
            data=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers=HEADERS,
        )
        assert chunked.status_code == 413, chunked.text
        assert chunked.json()["error"] == "payload_too_large"
        assert post(base, update_body(1))[0].status_code == 202  # the server is fine


def test_a_body_past_the_drain_cap_is_refused_without_reading_it(tmp_path, sqlite_url, redis_url):
    env = receiver_env(
        tmp_path,
        sqlite_url,
        redis_url,
        ANNOSYNC_MAX_BODY_BYTES="20000",
        ANNOSYNC_HTTP_DRAIN_BYTES="100000",
    )
    with served(env) as base:
        try:
            answer = requests.post(
                base + "/webhooks/label-studio/1", data=b"x" * 50_000_000, headers=HEADERS
            )
            assert answer.status_code == 413
        except requests.ConnectionError:
            pass  # closed while uploading: the sender sees the failure, never a 2xx
        assert post(base, update_body(1))[0].status_code == 202
