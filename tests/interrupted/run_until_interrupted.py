"""Not part of the suite: the run that ``tests/test_interrupt.py`` interrupts. It holds what
an interrupted run must not leave behind: a PostgreSQL database, a private redis-server, a
production-shaped stack (receiver and worker processes), and an in-process RQ worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import make_settings, run_worker

from bench.stack import stack
from sync.runtime import Runtime


def test_runs_until_interrupted(tmp_path, pg_database, redis_url):
    rt = Runtime(make_settings(tmp_path, pg_database, redis_url))
    with stack("sqlite", workers=1) as running:
        pids = [p.pid for p in running.workers]
        Path(os.environ["ANNOSYNC_INTERRUPT_READY"]).write_text(" ".join(map(str, pids)))
        while True:
            run_worker(rt)
            time.sleep(0.05)
