"""``annosync generations list|diff`` and ``annosync pull``: the commands a CI job runs.

They read the bucket alone (``ANNOSYNC_STORAGE_URL`` and its credentials): no database,
no Redis, so a CI runner needs nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from config.settings import load_settings
from sync import generations, materialise
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
    entries = generations.read_index(_storage(), args.project)
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
