"""The commands around CI: ``generations list|diff`` and ``pull``, which a CI job runs and
which read the bucket alone (``ANNOSYNC_STORAGE_URL`` and its credentials: no database, no
Redis), and ``triggers list|replay``, which an operator runs where the database is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from config.settings import load_settings
from sync import materialise, triggers
from sync.errors import InvalidInput
from sync.runtime import Runtime
from sync.storage import open_storage


def _storage():
    settings = load_settings()
    return open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)


def generation_number(value: str) -> int | None:
    """``latest`` or a generation number (argparse type)."""
    if value == "latest":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number or 'latest'") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number or 'latest'")
    return number


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


def register(add, sub) -> None:
    """Add the commands to the ``annosync`` parser (``add`` as in ``cli.build_parser``)."""
    gens = add("generations", None, "pinned dataset generations")
    gsub = gens.add_subparsers(dest="generations_command", required=True)
    glist = add("list", cmd_generations_list, "the retained generations", parent=gsub)
    glist.add_argument("--project", type=int, required=True)
    glist.add_argument("--json", action="store_true")
    gdiff = add("diff", cmd_generations_diff, "what changed between two generations", parent=gsub)
    gdiff.add_argument("--project", type=int, required=True)
    gdiff.add_argument("before", type=int)
    gdiff.add_argument("after", type=int)
    gdiff.add_argument("--json", action="store_true")
    pull = add("pull", cmd_pull, "materialise a generation in a folder, every sha256 verified")
    pull.add_argument("--project", type=int, required=True)
    pull.add_argument("--generation", type=generation_number, default=None, metavar="N|latest")
    pull.add_argument("--format", help="only this format's files (or 'tasks')")
    pull.add_argument("--to", type=Path, required=True, help="a new or empty folder")
    trig = add("triggers", None, "CI trigger deliveries")
    tsub = trig.add_subparsers(dest="triggers_command", required=True)
    tlist = add("list", cmd_triggers_list, "the newest trigger deliveries", parent=tsub)
    tlist.add_argument("--project", type=int)
    tlist.add_argument("--limit", type=int, default=50)
    tlist.add_argument("--json", action="store_true")
    treplay = add("replay", cmd_triggers_replay, "send trigger deliveries again", parent=tsub)
    treplay.add_argument("ids", type=int, nargs="+")
