"""An interrupted run (Ctrl-C, or SIGTERM from CI) stops at once and leaves nothing behind:
no process, no database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import PG_ADMIN_URL, _pg_reachable
from sqlalchemy import create_engine, text

from sync import db

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "tests/interrupted/run_until_interrupted.py"


def _databases(prefix: str) -> list[str]:
    engine = create_engine(db.normalise_url(PG_ADMIN_URL))
    try:
        with engine.connect() as conn:
            query = text("SELECT datname FROM pg_database WHERE datname LIKE :p")
            return list(conn.execute(query, {"p": prefix + "%"}).scalars())
    finally:
        engine.dispose()


def _session(sid: int) -> list[str]:
    """The live processes of session ``sid`` (the interrupted run and all it started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # exited meanwhile
        fields = rest.split()
        if int(fields[3]) == sid and fields[0] != "Z":
            command = stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode()
            found.append(command.strip() or name.split("(", 1)[1])
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"  # a zombie has exited (its parent has not reaped it yet)


@pytest.mark.parametrize(("how", "processes"), [("sigterm", 1), ("ctrl-c", 1), ("ctrl-c", 2)])
def test_an_interrupted_run_stops_at_once_and_leaves_nothing_behind(tmp_path, how, processes):
    if reason := _pg_reachable():
        pytest.skip(reason)
    prefix = f"annosync_intr_{uuid.uuid4().hex[:8]}"
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if k != "ANNOSYNC_TEST_REDIS_URL"}
    env |= {"ANNOSYNC_TEST_DB_PREFIX": prefix, "ANNOSYNC_INTERRUPT_READY": str(ready)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TARGET)]
    command += ["-n", str(processes)] if processes > 1 else ["-p", "no:xdist"]
    # A terminal's Ctrl-C reaches the whole foreground process group; SIGTERM only pytest.
    run = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), run.communicate(timeout=30)[0][-3000:]
        time.sleep(1.0)  # the in-process worker has run a few times: its handlers came and went
        workers = [int(pid) for pid in ready.read_text().split()]
        assert _databases(prefix), "the run's database exists while it runs"
        started = time.monotonic()
        if how == "ctrl-c":
            os.killpg(run.pid, signal.SIGINT)
        else:
            run.send_signal(signal.SIGTERM)
        try:
            output = run.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            left = _session(run.pid)
            os.killpg(run.pid, signal.SIGKILL)
            output = run.communicate()[0]
            pytest.fail(f"still running 30 s after {how}: {left}\n{output[-3000:]}")
        stopped_after = time.monotonic() - started
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert stopped_after < 30, output[-3000:]  # a clean-up, not a hang, on a busy machine
    assert run.returncode == 2, output[-3000:]  # pytest's "interrupted"
    assert _databases(prefix) == []
    deadline = time.monotonic() + 20  # what got Ctrl-C may still be exiting on a busy machine
    while _session(run.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session(run.pid) == [], "processes of the interrupted run are still running"
    assert not any(_alive(pid) for pid in workers)
