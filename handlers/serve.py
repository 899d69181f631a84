"""The receiver's HTTP server: the Flask app on waitress (``python -m handlers.serve``).

Waitress reads every request whole (headers, then the body, spooled to a temporary file past
512 KiB) in one event loop before a thread sees it. So an idle, slow or half-sent connection
costs a socket, never one of the application's threads, and the threads only ever run
complete requests. The limits that keep that true under attack:

- ``ANNOSYNC_HTTP_CONNECTION_LIMIT`` open connections; past it the loop stops accepting until
  some close (new connections wait in the kernel's backlog: service resumes as soon as
  attackers leave, never wedged). The loop polls with ``poll()``, which has no 1,024-socket
  ceiling, and the open-file limit is raised to fit.
- ``ANNOSYNC_HTTP_IDLE_TIMEOUT_S``: a connection silent that long, mid-request or between
  requests, is closed.
- ``ANNOSYNC_HTTP_DRAIN_BYTES``: bodies up to it are read in full, so an oversize one is
  answered with a 413 the sender reads (closing on a sender still uploading would reset it).

Started by ``annosync serve`` and ``annosync up``; it prints one ``listening on`` line once
the socket accepts connections, and a port that cannot be had is one line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import resource
import signal
import sys

from waitress.server import create_server

from config import validation
from config.settings import Settings, SettingsError, load_settings
from handlers.app import create_app
from sync.cli import port_number
from sync.logs import configure_logging

log = logging.getLogger("annosync.serve")
SPARE_FILES = 256  # beyond the connections: database, Redis, spooled bodies, exports


def server_options(settings: Settings) -> dict:
    """Waitress's adjustments for ``settings`` (see the module docstring)."""
    return {
        "threads": settings.http_threads,
        "connection_limit": settings.http_connection_limit,
        "channel_timeout": settings.http_idle_timeout_s,
        "cleanup_interval": max(1.0, settings.http_idle_timeout_s / 3),
        "max_request_body_size": max(settings.http_drain_bytes, settings.max_body_bytes + 1),
        "asyncore_use_poll": True,
        "backlog": 2048,
        "ident": "annosync",
        "clear_untrusted_proxy_headers": True,
    }


def raise_open_file_limit(connections: int) -> int:
    """Raise this process's soft open-file limit towards what ``connections`` need; returns
    the connection limit that fits (lower if the hard limit does not allow more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_FILES
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return connections
    fitting = max(16, soft - SPARE_FILES)
    log.warning("open-file limit %d: at most %d connections at once", soft, fitting)
    return fitting


def build_server(settings: Settings, host: str, port: int):
    """The bound (listening) waitress server of the receiver."""
    options = server_options(settings)
    options["connection_limit"] = raise_open_file_limit(options["connection_limit"])
    app = create_app(settings)
    # The first deliveries after a (re)start must not pay for compiling schemas and
    # connecting (~300 ms, during which later deliveries would queue behind them).
    validation.warm()
    app.config["RECORDER"].warm()
    return create_server(app, host=host, port=port, **options)


def _bind_error(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another process listens there)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need privileges)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="annosync serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=8080)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"annosync: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.secret_values(), settings.log_format)
    try:
        server = build_server(settings, args.host, args.port)
    except OSError as exc:
        print(f"annosync: {_bind_error(exc, args.host, args.port)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"annosync receiver listening on http://{args.host}:{server.effective_port}", flush=True)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
