"""Starting processes: the receiver, workers, and a private redis-server."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import rq.scheduler
from redis import Redis
from redis.exceptions import RedisError

from config.instance import INSTANCE_FILE, UP_LOCK
from sync.errors import AnnosyncError


class LaunchError(AnnosyncError):
    """Something `up`/`serve` needs cannot be had; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redis_reachable(url: str) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except (RedisError, OSError, ValueError):
        return False


def start_private_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a redis-server bound to loopback (on ``port``, else a free one); it keeps
    nothing on disk (the inbox in the database is the durable record, Redis only carries
    wake-ups)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LaunchError(
            "redis-server is not installed: install it (sudo apt-get install redis-server) "
            "or set REDIS_URL to a running Redis"
        )
    port = port or free_port()
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115  (lives as long as the server)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"redis-server exited at start; see {data_dir / 'redis.log'}")
        if redis_reachable(url):
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise LaunchError("redis-server did not answer within 10 s")


def local_secret(data_dir: Path) -> str:
    """The data dir's webhook secret, created (mode 0600) on first use."""
    path = data_dir / "webhook-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def receiver_command(host: str, port: int) -> list[str]:
    """The command that serves the receiver (waitress around the Flask app; see
    ``handlers/serve.py``). Named by module: the domain does not import the HTTP edge."""
    return [sys.executable, "-m", "handlers.serve", "--host", host, "--port", str(port)]


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (checked before starting children,
    so that ``up`` says so in one line instead of starting half a stack)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(proc: subprocess.Popen, host: str, port: int, timeout_s: float = 60) -> None:
    """Return once ``proc`` accepts connections on ``host:port``; raise if it exits first."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"the receiver exited with code {proc.returncode} at start")
        if port_in_use(target, port):
            return
        time.sleep(0.05)
    raise LaunchError(f"the receiver did not listen on {host}:{port} within {timeout_s:.0f} s")


def worker_command() -> list[str]:
    """The command that runs one worker."""
    return [sys.executable, "-m", "sync.cli", "worker"]


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a child process that shares our stdout/stderr."""
    return subprocess.Popen(command, env=env)


def hold_data_dir(data_dir: Path):
    """An exclusive lock on ``<data dir>/<UP_LOCK>``, held while the returned file stays
    open: a second ``up`` on the same folder is refused (two would share one SQLite file and
    one private Redis). The kernel releases it when the process dies."""
    handle = (data_dir / UP_LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LaunchError(f"annosync is already up on {data_dir}; stop it first") from None
    return handle


def announce(data_dir: Path, **facts: str) -> None:
    """Write what other commands on ``data_dir`` need to reach this instance (see
    :func:`config.settings.running_instance`), whole or not at all."""
    target = data_dir / INSTANCE_FILE
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(facts))
    os.replace(partial, target)


def reachable_host(host: str) -> str:
    """A host name for URLs a user can paste: a wildcard bind address is not one."""
    if host in {"0.0.0.0", "::", ""}:
        return socket.gethostname() or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def supervise(procs: dict[str, subprocess.Popen]) -> int:
    """Wait until Ctrl-C/SIGTERM or until a child exits; then stop them all."""
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exited = None
    while not stopping and exited is None:
        time.sleep(0.2)
        exited = next((name for name, p in procs.items() if p.poll() is not None), None)
    for proc in reversed(procs.values()):  # redis-server, started first, stops last
        terminate([proc])
    if exited is not None and not stopping:
        print(
            f"annosync: {exited} exited with code {procs[exited].returncode}; stopped",
            file=sys.stderr,
        )
        return 1
    return 0


def terminate(procs, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still running after ``grace_s``."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_was_requested(worker) -> bool:
    """Whether SIGINT or SIGTERM reached the RQ ``worker`` since it installed its handlers.

    RQ's first-signal handler arms the force-stop handler for the next one, and that is the
    only trace it leaves when the signal came while the worker was idle: it then ends
    ``work()`` normally. A caller that keeps running after ``work()`` returns (a worker that
    outlives Redis outages, a test's in-process worker) checks this so a Ctrl-C is never lost.
    """
    return signal.getsignal(signal.SIGTERM) == worker.request_force_stop


def scheduler_dies_with_its_worker() -> None:
    """Make RQ's scheduler process (forked by each worker) exit when its worker dies.

    A worker killed with SIGKILL (the OOM killer, a fault test) left its scheduler running
    as an orphan, polling Redis forever. Each scheduler now asks the kernel for SIGTERM when
    its parent dies (``PR_SET_PDEATHSIG``; Linux only), which RQ's scheduler handles by
    stopping after its current pass.
    """
    run = rq.scheduler.run
    if getattr(run, "bound_to_worker", False):
        return

    worker = os.getpid()  # call this in the worker's own process: it forks the scheduler

    def run_bound_to_worker(scheduler):
        _exit_with_parent(worker)
        run(scheduler)

    run_bound_to_worker.bound_to_worker = True
    rq.scheduler.run = run_bound_to_worker


def _exit_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # not Linux: an orphan stays, as before
        return
    if os.getppid() != parent:  # the worker died before the request took effect
        os._exit(0)
