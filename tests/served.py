"""The receiver as it runs in production (``python -m handlers.serve``) for tests that need
the real HTTP server: hostile connections, body limits, exports beside webhooks."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson
import requests

from sync import launcher
from tests.conftest import SECRET, delivery

ROOT = Path(__file__).resolve().parents[1]
UPDATED = delivery("05-ANNOTATION_UPDATED")
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}


def update_body(seq: int, task_id: int = 1, project_id: int = 1) -> bytes:
    """A distinct ANNOTATION_UPDATED (its own ``updated_at``) of one annotation."""
    body = copy.deepcopy(UPDATED)
    stamp = f"2026-11-22T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z"
    body["annotation"].update(id=task_id, task=task_id, lead_time=seq, updated_at=stamp)
    body["task"].update(id=task_id, project=project_id)
    body["project"]["id"] = project_id
    return orjson.dumps(body)


@contextmanager
def served(env: dict[str, str]):
    """The receiver on a free loopback port, with ``env`` as its settings; its base URL."""
    port = launcher.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "handlers.serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "warning", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # printed once the socket listens
        assert "listening on" in line, f"receiver did not start: {line!r} rc={proc.poll()}"
        yield f"http://127.0.0.1:{port}"
    finally:
        launcher.terminate([proc])


def receiver_env(tmp_path: Path, database_url: str, redis_url: str, **extra: str) -> dict:
    return {
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
        "ANNOSYNC_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        **extra,
    }


def post(base: str, body: bytes, path: str = "/webhooks/label-studio/1", timeout: float = 5):
    """One delivery on its own connection (as Label Studio sends); (status, seconds)."""
    started = time.perf_counter()
    response = requests.post(base + path, data=body, headers=HEADERS, timeout=timeout)
    return response, time.perf_counter() - started


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def open_slow_headers(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that sent part of a request's headers (slowloris)."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /webhooks/label-studio/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(sock)
    return socks


def trickle(socks: list[socket.socket]) -> None:
    """One more header byte on each slow connection (keeps them active)."""
    for sock in socks:
        with suppress(OSError):
            sock.send(b"a")


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HAMMER = """
import json, sys, threading, time, requests
url, token, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
outcomes, bad = [], []
deadline = time.monotonic() + seconds
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
def client():
    while time.monotonic() < deadline and not stop.is_set():
        answer = requests.get(url, headers={"Authorization": "Token " + token}, timeout=120)
        outcomes.append(answer.status_code)
        if answer.status_code == 200 and answer.content[:2] != b"PK":
            bad.append("not a zip")
        elif answer.status_code == 429:
            if not answer.headers.get("Retry-After"):
                bad.append("429 without Retry-After")
            time.sleep(0.2)
        print(answer.status_code, flush=True)
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"outcomes": outcomes, "bad": bad}), flush=True)
"""


def hammer_exports(url: str, token: str, clients: int, seconds: float) -> subprocess.Popen:
    """``clients`` threads asking for ``url`` again and again, in a process of their own (so
    that their work does not slow the test's own measuring), until its stdin is closed or
    ``seconds`` pass; it prints each status as it comes, then a JSON summary line."""
    return subprocess.Popen(
        [sys.executable, "-c", HAMMER, url, token, str(clients), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
