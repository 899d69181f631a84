"""An S3 server (moto's, over HTTP) that answers each request after a fixed delay, as a real
S3 endpoint's latency does: what dominates a worker's time in production is waiting on S3,
not CPU. Runs in its own process so its CPU does not share the caller's interpreter.

Usage: .venv/bin/python -m bench.slow_s3 --port 9000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import requests
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[1]


STATS_PATH = "/_requests"  # GET: the requests served so far, by method (JSON)
OUTAGE_PATH = "/_outage"  # GET ?on=1: every request answers 503 until ?on=0
SLOW_DOWN = (
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)


class Latency:
    """WSGI middleware: every request waits ``seconds`` before it is served (the server is
    threaded, so the waits overlap as they would on the network), and is counted."""

    def __init__(self, app, seconds: float) -> None:
        self.app, self.seconds = app, seconds
        self.counts: Counter[str] = Counter()
        self.guard = threading.Lock()
        self.down = False

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == STATS_PATH:
            body = json.dumps(self.counts).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == OUTAGE_PATH:
            self.down = "on=1" in environ.get("QUERY_STRING", "")
            start_response("204 No Content", [])
            return [b""]
        with self.guard:
            self.counts[environ.get("REQUEST_METHOD", "?")] += 1
        time.sleep(self.seconds)
        if self.down:  # what S3 answers when it sheds load
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            return [SLOW_DOWN]
        return self.app(environ, start_response)


def outage(endpoint: str, down: bool) -> None:
    """Make the server answer 503 to everything (``down``), or serve again."""
    requests.get(f"{endpoint}{OUTAGE_PATH}?on={int(down)}", timeout=5).raise_for_status()


def requests_served(endpoint: str) -> Counter:
    """The S3 requests the server has answered, by HTTP method."""
    return Counter(requests.get(endpoint + STATS_PATH, timeout=5).json())


def serve(port: int, latency_s: float) -> None:
    app = Latency(DomainDispatcherApplication(create_backend_app), latency_s)
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


@contextmanager
def slow_s3(port: int, latency_ms: float):
    """The server's endpoint URL while it runs."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.slow_s3",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the S3 server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    serve(args.port, args.latency_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
