"""``annosync up``, ``serve``, ``worker`` and ``db upgrade``: the processes of a running
instance."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path

from redis.exceptions import RedisError
from rq import SimpleWorker

from config.instance import INSTANCE_FILE
from config.settings import SettingsError
from sync import db, launcher, media, sweeper
from sync.cli_common import UsageError, settings_from_env
from sync.cli_instance import require_current_schema
from sync.errors import DatabaseUnavailable
from sync.runtime import Runtime, set_runtime


def cmd_up(args: argparse.Namespace) -> int:
    """Receiver + worker on the embedded defaults, in the foreground."""
    # SIGTERM before the supervisor takes over stops like Ctrl-C: no child is left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if launcher.port_in_use(args.host, args.port):
        raise UsageError(f"port {args.port} on {args.host} is already in use; choose --port")
    data_dir = Path(args.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    held = launcher.hold_data_dir(data_dir)  # for as long as this process lives
    (data_dir / INSTANCE_FILE).unlink(missing_ok=True)  # left by an `up` that was killed
    settings = settings_from_env(data_dir=data_dir)
    if settings.storage_url.startswith("file://"):  # the bucket is there from the start
        Path(settings.storage_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    secret = (
        settings.webhook_secrets[0] if settings.webhook_secrets else launcher.local_secret(data_dir)
    )
    db.upgrade(settings.database_url)
    procs = {}
    redis_url = os.environ.get("REDIS_URL")
    if redis_url and not launcher.redis_reachable(redis_url):
        raise launcher.LaunchError(f"REDIS_URL={redis_url} does not answer")
    if not redis_url:
        procs["redis-server"], redis_url = launcher.start_private_redis(data_dir)
    env = {
        **os.environ,
        "ANNOSYNC_DATA_DIR": str(data_dir),
        "ANNOSYNC_DATABASE_URL": settings.database_url,
        "ANNOSYNC_STORAGE_URL": settings.storage_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": ",".join(settings.webhook_secrets or (secret,)),
    }
    procs["receiver"] = launcher.spawn(launcher.receiver_command(args.host, args.port), env)
    procs["worker"] = launcher.spawn(launcher.worker_command(), env)
    try:
        launcher.wait_listening(procs["receiver"], args.host, args.port)
    except BaseException:  # it did not start, or Ctrl-C / SIGTERM while it started
        launcher.terminate(list(procs.values())[::-1])
        raise
    base = f"http://{launcher.reachable_host(args.host)}:{args.port}"
    launcher.announce(data_dir, redis_url=redis_url, receiver_url=base)
    print(f"annosync is up. Storage: {settings.storage_url}", flush=True)
    print(f"  Label Studio webhook URL: {base}/webhooks/label-studio/<project id>")
    print(
        f"  Header to add:            {settings.webhook_header}: Bearer {secret}"
        if settings.webhook_header.lower() == "authorization"
        else f"  Header to add:            {settings.webhook_header}: {secret}"
    )
    print("  Ctrl-C stops everything.", flush=True)
    code = launcher.supervise(procs)
    (data_dir / INSTANCE_FILE).unlink(missing_ok=True)
    print("annosync stopped.", flush=True)
    held.close()
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    """The receiver (waitress; production)."""
    settings = settings_from_env()
    if not settings.webhook_secrets and not settings.signing_secrets:
        raise SettingsError("ANNOSYNC_WEBHOOK_SECRET: required to serve webhooks")
    require_current_schema(settings)
    command = launcher.receiver_command(args.host, args.port)
    os.execv(command[0], command)
    return 1  # not reached


def cmd_worker(args: argparse.Namespace) -> int:
    """RQ worker(s) with the scheduler and the inbox sweep."""
    settings = settings_from_env()
    rt = Runtime(settings)
    set_runtime(rt)
    stop = threading.Event()
    _start_when_database_answers(rt)
    if not args.burst:
        threading.Thread(target=sweeper.sweep_forever, args=(rt, stop), daemon=True).start()
        if settings.media:
            threading.Thread(target=media.run_forever, args=(rt, stop), daemon=True).start()
    queues = args.queues.split(",") if args.queues else [settings.queue_name]
    # SimpleWorker runs jobs in-process: no fork per job (drains are short and many).
    try:
        _work_through_outages(queues, rt, args.burst)
    finally:
        stop.set()
    return 0


def _start_when_database_answers(rt: Runtime) -> None:
    """Check the schema and sweep once. A worker started while the database is unavailable
    waits for it (a worker that exited instead would leave every later delivery pending);
    a schema that is not current still stops it."""
    delay = 0.5
    while True:
        try:
            require_current_schema(rt.settings)
            sweeper.sweep(rt, min_age_s=0)
            if removed := rt.storage.tidy():
                logging.getLogger("annosync.worker").info(
                    "removed %d temporary files of killed writers", removed
                )
            return
        except DatabaseUnavailable as exc:
            logging.getLogger("annosync.worker").warning(
                "database unavailable (%s); retrying in %.1f s", str(exc).splitlines()[0], delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


# RQ's scheduler (delayed jobs, retries with a back-off) dies with a Redis outage and only
# the worker's maintenance pass starts it again: run that pass often, not every 10 minutes.
MAINTENANCE_S = 15


def _work_through_outages(queues: list[str], rt: Runtime, burst: bool) -> None:
    """Run the RQ worker; if Redis goes away under it, wait and start a new one instead of
    exiting (the inbox keeps what is owed, the sweep queues it again once Redis is back)."""
    launcher.scheduler_dies_with_its_worker()
    delay = 0.5
    worker = None
    while True:
        try:
            # SimpleWorker runs jobs in-process: no fork per job (drains are short and many).
            # Building one talks to Redis, so it belongs inside the outage handling too.
            worker = SimpleWorker(
                queues, connection=rt.worker_redis, maintenance_interval=MAINTENANCE_S
            )
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
            return
        except RedisError as exc:
            if worker is not None and launcher.stop_was_requested(worker):
                return  # Ctrl-C or SIGTERM while Redis went away: stop, never wait for it
            logging.getLogger("annosync.worker").warning(
                "Redis unavailable (%s); worker restarts in %.1f s", exc, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    settings = settings_from_env()
    db.upgrade(settings.database_url)
    print("database schema is up to date")
    return 0
