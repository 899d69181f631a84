"""The commands around CI: ``generations list|diff`` and ``pull``, which a CI job runs and
which read the bucket alone (``ANNOSYNC_STORAGE_URL`` and its credentials: no database, no
Redis), and ``triggers list|replay``, which an operator runs where the database is.
"""

from __future__ import annotations

import argparse
import json

from config.settings import load_settings
from sync import materialise, triggers
from sync.errors import InvalidInput
from sync.runtime import Runtime
from sync.storage import open_storage


def _storage():
    settings = load_settings()
    return open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)


def cmd_generations_list(args: argparse.Namespace) -> int:
    entries = materialise.read_index(_storage(), args.project)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{'generation':>10}  {'created (UTC)':20}  {'tasks':>7}  {'files':>7}  manifest sha256")
    for e in entries:
        counts = e["counts"]
        print(
            f"{e['generation']:>10}  {e['created_at'][:19]:20}  {counts['tasks']:>7}  "
            f"{counts['files']:>7}  {e['sha256']}"
        )
    return 0


def cmd_generations_diff(args: argparse.Namespace) -> int:
    result = materialise.diff(_storage(), args.project, args.before, args.after)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
        return 0
    print(f"project {args.project}: generation {args.before} -> {args.after}")
    if not result.tasks:
        print("  tasks: no change")
    for split, changes in sorted(result.tasks.items()):
        counts = ", ".join(f"{len(ids)} {what}" for what, ids in changes.items())
        print(f"  {split}: {counts}")
    files = result.files
    print(
        f"  export files: {files['added']} added, {files['changed']} changed, "
        f"{files['deleted']} deleted"
    )
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    pulled = materialise.pull(_storage(), args.project, args.generation, args.format, args.to)
    print(
        f"project {args.project}: generation {pulled.generation} in {args.to} "
        f"({pulled.files} files, {pulled.bytes} bytes, every sha256 verified; "
        f"manifest {pulled.manifest_sha256})"
    )
    return 0


def cmd_triggers_list(args: argparse.Namespace) -> int:
    rt = Runtime(load_settings())
    with rt.sessions() as session:
        found = triggers.deliveries(session, args.project, args.limit)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no trigger deliveries")
    for d in found:
        tries = ", ".join(
            f"{a['at'][:19]} {a['status'] or '-'}{' ' + a['error'][:60] if a['error'] else ''}"
            for a in d["attempts"]
        )
        due = f"; next attempt {d['next_attempt_at'][:19]}" if d["next_attempt_at"] else ""
        print(
            f"{d['id']:>6}  {d['trigger']:16} project {d['project']} generation "
            f"{d['generation']}  {d['status']}{due}  [{tries or 'not sent yet'}]"
        )
    return 0


def cmd_triggers_replay(args: argparse.Namespace) -> int:
    rt = Runtime(load_settings())
    for delivery_id in args.ids:
        if not triggers.replay(rt, delivery_id):
            raise InvalidInput(f"no trigger delivery {delivery_id}")
        print(f"trigger delivery {delivery_id} queued again")
    return 0
