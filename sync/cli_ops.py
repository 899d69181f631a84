"""``annosync status``, ``deliveries``, ``resync``, ``rebuild``, ``settings``, ``check`` and
``connect``: looking at and repairing a running instance's state, and pointing Label Studio
at it."""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from config.settings import settings_markdown
from sync import exports, inbox, readiness, reconcile, status, store
from sync.cli_common import UsageError, settings_from_env
from sync.cli_instance import instance_settings
from sync.connect import connect, receiver_base, webhook_url
from sync.exporters import exporter_names, get_exporter
from sync.exporters.capabilities import unfit_reason
from sync.labelstudio import LabelStudioClient, LabelStudioError
from sync.progress import Progress
from sync.reconcile import resync_project
from sync.replay import replay
from sync.runtime import Runtime


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    settings = instance_settings()
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
    done = replay(Runtime(instance_settings()), args.ids)
    print(f"replaying {done.count} deliveries" if done.count != 1 else "replaying 1 delivery")
    for line in done.refused:
        print(f"annosync: {line}", file=sys.stderr)
    return 2 if done.refused else 0


def cmd_status(args: argparse.Namespace) -> int:
    rt = Runtime(instance_settings())
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
    rt = Runtime(instance_settings())
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


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Regenerate a project's derived exports from the stored task state: every kept-fresh
    format's files (or only ``--format``'s), then every aggregate."""
    rt = Runtime(instance_settings())
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


def cmd_connect(args: argparse.Namespace) -> int:
    """Add a webhook to annosync to every Label Studio project that has none (again every
    ``--watch`` seconds, for projects created later: a failed round is retried then)."""
    settings = settings_from_env()
    base = receiver_base(args.receiver_url)
    if not (settings.label_studio_url and settings.label_studio_api_key):
        raise UsageError("connect needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    if not settings.webhook_secrets:
        raise UsageError("connect needs ANNOSYNC_WEBHOOK_SECRET (the secret webhooks will send)")
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, 30.0)
    while True:
        try:
            done = connect(client, base, settings.webhook_header, settings.webhook_secrets[0])
        except LabelStudioError as exc:
            if not args.watch:
                raise
            print(f"annosync: {exc}; trying again in {args.watch} s", file=sys.stderr, flush=True)
        else:
            for project_id in done.added:
                print(f"project {project_id}: webhook added -> {webhook_url(base, project_id)}")
            print(done.line(), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def cmd_check(_args: argparse.Namespace) -> int:
    """Whether this process could do its work: the database, Redis and the storage each
    answer (a container's health check); exit 1 naming what does not."""
    checks = readiness.checks(Runtime(settings_from_env()))
    for name, state in checks.items():
        print(f"{name}: {state}")
    return 0 if all(state == "ok" for state in checks.values()) else 1
