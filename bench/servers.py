"""The HTTP server arrangements the benchmarks compare, for any WSGI app.

- ``waitress``: what annosync ships (``handlers/serve.py``: requests read whole in one event
  loop before a thread runs them, connection cap, idle timeout).
- ``gunicorn``: the arrangement it replaced: 2 gunicorn gthread workers of 8 threads with the
  connection-balancing worker of ``bench/gthread_balanced.py``.

``python -m bench.servers waitress MODULE:APP PORT`` serves any app with annosync's waitress
options, so the bare endpoint is measured on exactly the receiver's settings.
"""

from __future__ import annotations

import importlib
import sys

from waitress.server import create_server

from config.settings import load_settings
from handlers.serve import raise_open_file_limit, server_options

SERVERS = ("waitress", "gunicorn")


def command(server: str, port: int, app: str = "handlers.wsgi:app", workers: int = 2) -> list[str]:
    """The command serving ``app`` on ``server`` at 127.0.0.1:``port``."""
    if server == "waitress":
        if app == "handlers.wsgi:app":
            return [sys.executable, "-m", "handlers.serve", "--port", str(port)]
        return [sys.executable, "-m", "bench.servers", "waitress", app, str(port)]
    if server == "gunicorn":
        return [
            *(sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}"),
            *("--workers", str(workers), "--threads", "8"),
            *("--worker-class", "bench.gthread_balanced.BalancedThreadWorker"),
            *("--timeout", "30", "--keep-alive", "5", "--log-level", "warning"),
        ]
    raise ValueError(f"unknown server {server!r}; one of {SERVERS}")


def _serve_waitress(app_path: str, port: int) -> None:
    module, _, name = app_path.partition(":")
    app = getattr(importlib.import_module(module), name)
    options = server_options(load_settings())
    options["connection_limit"] = raise_open_file_limit(options["connection_limit"])
    create_server(app, host="127.0.0.1", port=port, **options).run()


if __name__ == "__main__":
    _serve_waitress(sys.argv[2], int(sys.argv[3]))
