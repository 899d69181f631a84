"""The receiver's gunicorn worker spreads keep-alive connections over its processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from handlers.server import ConnectionBoard
from sync import launcher

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def pid_server_running(wait_for_workers: int, env: dict | None = None):
    """A 2-worker receiver of ``tests.pid_app``, once ``wait_for_workers`` have answered."""
    port = launcher.free_port()
    command = launcher.gunicorn_command(
        "127.0.0.1", port, 2, app="tests.pid_app:app", access_log=False
    )
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < wait_for_workers and time.monotonic() < deadline:
            try:
                pids.add(requests.get(base, timeout=1).text)
            except requests.RequestException:
                time.sleep(0.05)
        yield base
    finally:
        launcher.terminate([proc])


@pytest.fixture
def pid_server():
    with pid_server_running(wait_for_workers=2) as base:
        yield base


def test_keep_alive_connections_are_spread_evenly_over_the_workers(pid_server):
    # Opened together, as a load generator does: plain gthread put them all on one worker.
    sessions = [requests.Session() for _ in range(16)]
    served = Counter(s.get(pid_server, timeout=5).text for s in sessions)
    for _ in range(5):  # each connection stays with its worker
        for session in sessions:
            served[session.get(pid_server, timeout=5).text] += 1
    for session in sessions:
        session.close()
    assert len(served) == 2, served
    assert min(served.values()) >= 0.35 * sum(served.values()), served


def test_connections_move_to_a_sibling_that_started_late(tmp_path):
    env = {"PID_APP_MARKER": str(tmp_path / "first"), "PID_APP_SLOW_S": "2"}
    with pid_server_running(wait_for_workers=1, env=env) as base:
        sessions = [requests.Session() for _ in range(16)]
        first = Counter(s.get(base, timeout=5).text for s in sessions)
        assert len(first) == 1, first  # the sibling is still loading: all land on one worker
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # a sender that keeps its connections alive
            served = Counter(s.get(base, timeout=5).text for s in sessions)
            if len(served) == 2 and min(served.values()) >= 6:
                break
            time.sleep(0.02)
        for session in sessions:
            session.close()
    assert len(served) == 2 and min(served.values()) >= 6, served


def test_the_board_leaves_out_this_worker_silent_siblings_and_those_gone():
    board = ConnectionBoard(slots=4)
    assert board.fewest_elsewhere(0) is None
    board.publish(0, 5)
    board.publish(1, 3)
    board.publish(2, 7)
    assert board.fewest_elsewhere(0) == 3
    assert board.fewest_elsewhere(1) == 5
    board.leave(1)
    assert board.fewest_elsewhere(0) == 7


def test_a_sibling_that_paused_accepting_is_not_deferred_to():
    board = ConnectionBoard(slots=3)
    board.publish(0, 4)
    board.publish(1, 0, listening=False)
    assert board.fewest_elsewhere(0) is None  # both deferring: nobody would accept
    board.publish(2, 2)
    assert board.fewest_elsewhere(0) == 2
    board.publish(1, 0)
    assert board.fewest_elsewhere(0) == 0


def test_a_silent_sibling_is_not_waited_for(monkeypatch):
    board = ConnectionBoard(slots=2)
    board.publish(1, 0)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 10)
    assert board.fewest_elsewhere(0) is None
