"""The ``annosync`` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage / bad input."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from redis.exceptions import RedisError
from rq import SimpleWorker
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings, SettingsError, load_settings, settings_markdown
from sync import (
    admission,
    cli_ci,
    convert,
    db,
    exports,
    inbox,
    jobs,
    launcher,
    media,
    reconcile,
    status,
    store,
    sweeper,
)
from sync.errors import AnnosyncError, DatabaseUnavailable, InvalidInput
from sync.exporters import exporter_names, get_exporter
from sync.exporters.capabilities import list_formats, unfit_reason
from sync.limits import Limits
from sync.logs import configure_logging
from sync.models import Delivery
from sync.progress import Progress
from sync.reconcile import resync_project
from sync.runtime import Runtime, set_runtime


class UsageError(InvalidInput):
    """Bad input from the user (exit 2)."""


def _settings(**overrides) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(
        settings.log_level if not settings.debug else "debug", settings.secret_values()
    )
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    """Receiver + worker on the embedded defaults, in the foreground."""
    # SIGTERM before the supervisor takes over stops like Ctrl-C: no child is left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if launcher.port_in_use(args.host, args.port):
        raise UsageError(f"port {args.port} on {args.host} is already in use; choose --port")
    data_dir = Path(args.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    held = launcher.hold_data_dir(data_dir)  # for as long as this process lives
    settings = _settings(data_dir=data_dir)
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
    print(f"annosync is up. Storage: {settings.storage_url}", flush=True)
    print(f"  Label Studio webhook URL: {base}/webhooks/label-studio/<project id>")
    print(
        f"  Header to add:            {settings.webhook_header}: Bearer {secret}"
        if settings.webhook_header.lower() == "authorization"
        else f"  Header to add:            {settings.webhook_header}: {secret}"
    )
    print("  Ctrl-C stops everything.", flush=True)
    code = launcher.supervise(procs)
    print("annosync stopped.", flush=True)
    held.close()
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    """The receiver (waitress; production)."""
    settings = _settings()
    if not settings.webhook_secrets and not settings.signing_secrets:
        raise SettingsError("ANNOSYNC_WEBHOOK_SECRET: required to serve webhooks")
    _require_current_schema(settings)
    command = launcher.receiver_command(args.host, args.port)
    os.execv(command[0], command)
    return 1  # not reached


def cmd_worker(args: argparse.Namespace) -> int:
    """RQ worker(s) with the scheduler and the inbox sweep."""
    settings = _settings()
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
            _require_current_schema(rt.settings)
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
    settings = _settings()
    db.upgrade(settings.database_url)
    print("database schema is up to date")
    return 0


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    settings = _settings()
    wanted = "failed" if args.failed else "rejected" if args.rejected else args.status
    with Runtime(settings).sessions() as session:
        rows = inbox.list_deliveries(session, wanted, args.limit)
        unexported = store.failed_tasks(session, None, args.limit) if wanted == "failed" else []
    print(
        f"{'id':>8}  {'status':8}  {'action':22}  {'project':>7}  {'attempts':>8}  received / error"
    )
    for row in rows:
        detail = row.last_error or row.errors or row.received_at.isoformat(timespec="seconds")
        print(
            f"{row.id:>8}  {row.status:8}  {row.action:22}  {row.project_id or '-':>7}  "
            f"{row.attempts:>8}  {detail[:160]}"
        )
    if unexported:
        print("\ntasks left out of the exports (retried when they change, or by resync):")
        print(f"{'task':>8}  {'project':>7}  reason")
        for task_id, project_id, reason in unexported:
            print(f"{task_id:>8}  {project_id or '-':>7}  {reason[:160]}")
    return 0


def cmd_deliveries_replay(args: argparse.Namespace) -> int:
    """Re-apply deliveries that pass today's checks; name each one that does not (exit 2)."""
    rt = Runtime(_settings())
    projects, refused, replayed = set(), [], 0
    with rt.sessions() as session:
        for delivery_id in args.ids:
            row = session.get(Delivery, delivery_id)
            if row is None:
                refused.append(f"no delivery {delivery_id}")
            elif found := admission.readmit(row, rt.settings):
                problem = f"{found[0].path}: {found[0].message}"
                refused.append(f"delivery {delivery_id} is still invalid: {problem}")
            else:
                projects.add(row.project_id)
                replayed += 1
        session.commit()
    for project_id in projects:
        jobs.request_drain(rt.redis, rt.settings.queue_name, project_id)
    print(f"replaying {replayed} deliveries" if replayed != 1 else "replaying 1 delivery")
    for line in refused:
        print(f"annosync: {line}", file=sys.stderr)
    return 2 if refused else 0


def cmd_status(args: argparse.Namespace) -> int:
    rt = Runtime(_settings())
    with rt.sessions() as session:
        if args.project is not None:
            store.require_project(session, args.project)
        report = status.project_status(session, args.project)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(status.as_text(report))
    return 0


def cmd_resync(args: argparse.Namespace) -> int:
    """Reconcile the bucket with the store (and the store with Label Studio)."""
    rt = Runtime(_settings())
    bar = Progress(f"resync project {args.project}")
    try:
        summary = resync_project(
            rt,
            args.project,
            from_labelstudio=args.from_labelstudio,
            dry_run=args.dry_run,
            progress=bar.update,
        )
    finally:
        bar.close()
    print(summary.line())
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a Label Studio export (or task files) with the same exporters as the
    incremental path."""
    settings = _settings()
    ctx = convert.context(args.config, args.classes, settings.split)
    ctx.max_classes = settings.max_labels
    if args.list_formats:
        return _print_formats(ctx.config)
    missing = [
        flag
        for flag, value in (
            ("INPUT", args.input),
            ("-f FORMAT", args.format),
            ("-o OUTPUT", args.output),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"convert needs {', '.join(missing)} (or --list-formats)")
    bar = Progress(f"convert {args.input.name} to {args.format}")
    try:
        summary = convert.convert(
            args.input,
            args.format,
            args.output,
            ctx,
            overwrite=args.overwrite,
            progress=bar.update,
            limits=Limits.from_settings(settings),
            media=media.reader(settings),
            project=args.project,
        )
    finally:
        bar.close()
    for task_id, why in summary.media_failed.items():
        print(f"annosync: task {task_id}: image not copied: {why}", file=sys.stderr)
    for task_id, why in summary.failed.items():
        print(f"annosync: task {task_id} not converted: {why}", file=sys.stderr)
    left_out = f", {_count(len(summary.failed), 'task')} left out" if summary.failed else ""
    classes = f", {_count(len(summary.classes), 'class')}" if summary.classes else ""
    if summary.images or summary.media_failed:
        left_out += f", {_count(summary.images, 'image')}"
        left_out += f" ({len(summary.media_failed)} missing)" if summary.media_failed else ""
    print(
        f"{_count(summary.tasks, 'task')} converted to {args.format.upper()} in {args.output} "
        f"({_count(summary.files, 'file')}{classes}{left_out})"
    )
    return 0


def _count(n: int, noun: str) -> str:
    """``1 task``, ``2 tasks``, ``3 classes``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


def _print_formats(config) -> int:
    for entry in list_formats(config):
        state = f"disabled: {entry['reason']}" if entry["disabled"] else entry["title"]
        print(f"{entry['name']:15} {state}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Regenerate a project's derived exports from the stored task state: every kept-fresh
    format's files (or only ``--format``'s), then every aggregate."""
    rt = Runtime(_settings())
    with rt.sessions() as session:
        store.require_project(session, args.project)
    only = _rebuildable(rt, args.project, args.format) if args.format else None
    done = reconcile.rebuild(rt, args.project, only)
    names = ", ".join(only or rt.settings.export_formats)
    repaired = f"; {done.repaired} files repaired" if done.repaired else ""
    tidy = f"; {done.removed} files no task owns removed" if done.removed else ""
    print(
        f"project {args.project}: {done.tasks} tasks rendered to {names}; "
        f"generation {done.generation}{repaired}{tidy}"
    )
    return 0


def _rebuildable(rt: Runtime, project_id: int, name: str) -> tuple[str, ...]:
    """``(NAME,)`` for a kept-fresh format that fits the project's label config; anything
    else is a usage error (a format not kept fresh would be written once, never updated)."""
    name = name.upper()
    if name not in exporter_names():
        raise UsageError(f"unknown format {name}; the formats: {', '.join(exporter_names())}")
    kept = rt.settings.export_formats
    if name not in kept:
        raise UsageError(
            f"{name} is not kept fresh (ANNOSYNC_EXPORT_FORMATS: {', '.join(kept) or 'none'}); "
            f"`annosync convert` writes a one-off export"
        )
    with rt.sessions() as session:
        config = exports.project_config(session, project_id)
    why = unfit_reason(get_exporter(name), config)
    if why is not None:
        raise UsageError(f"{name} does not fit project {project_id}'s label config: {why}")
    return (name,)


def cmd_settings(_args: argparse.Namespace) -> int:
    print(settings_markdown())
    return 0


def _require_current_schema(settings: Settings) -> None:
    if not db.is_current(settings.database_url):
        raise launcher.LaunchError(
            "the database schema is not up to date: run `annosync db upgrade`"
        )


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="annosync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable, help_: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    up = add("up", cmd_up, "receiver + worker on the embedded defaults (SQLite, local folder)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=launcher.port_number, default=8080)
    up.add_argument("--data-dir", default=os.environ.get("ANNOSYNC_DATA_DIR", "./annosync-data"))
    serve = add("serve", cmd_serve, "the receiver on waitress (settings from the environment)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=launcher.port_number, default=8080)
    worker = add("worker", cmd_worker, "an RQ worker with the scheduler")
    worker.add_argument("--burst", action="store_true", help="drain the queue and exit")
    worker.add_argument("--queues", help="comma-separated queue names")
    dbp = add("db", None, "database schema").add_subparsers(dest="db_command", required=True)
    add("upgrade", cmd_db_upgrade, "apply schema migrations", parent=dbp)
    deliveries = add("deliveries", None, "inspect and replay deliveries")
    dsub = deliveries.add_subparsers(dest="deliveries_command", required=True)
    dlist = add("list", cmd_deliveries_list, "the newest deliveries", parent=dsub)
    which = dlist.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true")
    which.add_argument("--rejected", action="store_true")
    which.add_argument("--status", choices=["pending", "applied", "failed", "ignored", "rejected"])
    dlist.add_argument("--limit", type=int, default=50)
    replay = add("replay", cmd_deliveries_replay, "apply deliveries again", parent=dsub)
    replay.add_argument("ids", type=int, nargs="+")
    st = add("status", cmd_status, "per-project state")
    st.add_argument("--project", type=int)
    st.add_argument("--json", action="store_true")
    rs = add("resync", cmd_resync, "reconcile the bucket with the store (and Label Studio)")
    rs.add_argument("--project", type=int, required=True)
    rs.add_argument(
        "--from-labelstudio",
        action="store_true",
        help="first pull the project's full state from Label Studio",
    )
    rs.add_argument("--dry-run", action="store_true", help="report, change nothing")
    cv = add("convert", cmd_convert, "convert a Label Studio export to a training format")
    cv.add_argument(
        "input", type=Path, nargs="?", help="JSON export, JSONL file or folder of <id>.json"
    )
    cv.add_argument("-f", "--format", help=", ".join(exporter_names()))
    cv.add_argument("-o", "--output", type=Path, help="output folder")
    cv.add_argument(
        "--list-formats",
        action="store_true",
        help="list the formats (with -c: which fit the config, and why not)",
    )
    cv.add_argument("-c", "--config", type=Path, help="label config XML (else inferred)")
    cv.add_argument("--classes", type=Path, help="existing classes.txt whose ids to keep")
    cv.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    cv.add_argument(
        "--project", type=int, help="only this project's tasks (input mixing projects needs it)"
    )
    rb = add("rebuild", cmd_rebuild, "regenerate a project's exports from the stored tasks")
    rb.add_argument("--project", type=int, required=True)
    rb.add_argument("--format", help="only this format (default: ANNOSYNC_EXPORT_FORMATS)")
    add("settings", cmd_settings, "print the settings table (Markdown)")
    cli_ci.register(add, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``annosync`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, InvalidInput) as exc:  # the user's input: exit 2
        print(f"annosync: {exc}", file=sys.stderr)
        return 2
    except (AnnosyncError, RedisError) as exc:
        print(f"annosync: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"annosync: database error: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one readable line, never a traceback
        logging.getLogger("annosync").debug("failure", exc_info=True)
        print(f"annosync: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
