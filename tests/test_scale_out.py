"""The production shape, CI-sized (bench/scale_out.py runs the full one): 2 receivers and 2
workers as separate processes on PostgreSQL, Redis and an S3 server answering each request
after 20 ms, under 1,000 updates over 100 tasks in 5 projects sent on 16 connections.
Every task ends at its newest update in its task file and its project's manifest, no object
is lost or extra, and each project's generations were made one at a time (numbers 1..N,
each once, each manifest's task count right)."""

from __future__ import annotations

import signal
import threading
import time

import orjson
import pytest
from conftest import _pg_reachable
from sqlalchemy import select

from bench import scale_out, slow_s3
from sync import db
from sync.models import Generation

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_two_receivers_and_two_workers_converge_on_one_bucket():
    if reason := _pg_reachable():
        pytest.skip(reason)
    burst = scale_out.make_burst(deliveries=1000, tasks=100, projects=5)
    with scale_out.scale_stack(workers=2, receivers=2, latency_ms=20) as s:
        scale_out.send(s.bases, burst.imports)
        scale_out.send(s.bases, burst.updates)
        scale_out.wait_final(s, burst, timeout_s=180)
        assert scale_out.problems(s, burst) == []
        # Once quiet, each project's generations were made one at a time, and the newest is
        # announced (the index is published right after the commit: allow it a moment).
        deadline = time.monotonic() + 20
        while True:
            made = _generations(s.db_url)
            announced = {p: _announced(s, p) for p in burst.newest}
            newest = {p: max(n for q, n, _t in made if q == p) for p in burst.newest}
            if announced == newest or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert announced == newest
        for project in burst.newest:
            numbers = sorted(n for p, n, _t in made if p == project)
            assert numbers == list(range(1, len(numbers) + 1)), (project, numbers)
            assert {t for p, _n, t in made if p == project} == {20}  # every task, every time


def _generations(url: str) -> list:
    with db.session_factory(url)() as session:
        query = select(Generation.project_id, Generation.number, Generation.tasks)
        return list(session.execute(query).all())


def _announced(s, project: int) -> int | None:
    key = f"{scale_out.PREFIX}/generations/{project}/index.json"
    index = orjson.loads(s.s3.get_object(Bucket=scale_out.BUCKET, Key=key)["Body"].read())
    return index[-1]["generation"] if index else None


@pytest.mark.faults
def test_the_scale_out_shape_loses_nothing_to_faults_mid_burst():
    """The same shape while the burst arrives: a worker SIGKILLed (another started), Redis
    restarted empty, S3 answering 503 to everything for 3 s. The bucket still ends exactly
    as the deliveries say."""
    if reason := _pg_reachable():
        pytest.skip(reason)
    burst = scale_out.make_burst(deliveries=1000, tasks=100, projects=5, seed=3)
    with scale_out.scale_stack(workers=2, receivers=2, latency_ms=20) as s:
        scale_out.send(s.bases, burst.imports)
        sender = threading.Thread(target=scale_out.send, args=(s.bases, burst.updates))
        sender.start()
        time.sleep(0.5)
        victim = s.workers.pop(0)
        victim.send_signal(signal.SIGKILL)  # mid-job, most likely
        victim.wait()
        scale_out.start_worker(s, "replacement")
        time.sleep(0.5)
        s.redis.stop()  # queues, locks and drain flags gone (deliveries wait in the inbox)
        time.sleep(1)
        s.redis.start()
        slow_s3.outage(s.endpoint, True)
        time.sleep(3)
        slow_s3.outage(s.endpoint, False)
        sender.join(120)
        scale_out.wait_final(s, burst, timeout_s=240)
        assert scale_out.problems(s, burst) == []
