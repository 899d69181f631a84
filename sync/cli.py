"""The ``annosync`` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage / bad input.

This module is only the parser: ``annosync --help`` and usage errors import nothing heavy
(<= 0.3 s). A command's module (``sync.cli_service``, ``cli_ops``, ``cli_convert``,
``cli_ci``) is imported when that command runs, by name, from :mod:`sync.cli_common`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def port_number(value: str) -> int:
    """A TCP port, 1-65535 (an argparse type)."""
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to 65535, not {value!r}")
    return int(value)


def seconds(value: str) -> float:
    """A finite number of seconds, >= 0 (an argparse type)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {value!r}")
    return number


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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="annosync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, target: str | None, help_: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(command_target=target)
        return p

    up = add(
        "up",
        "cli_service:cmd_up",
        "receiver + worker on the embedded defaults (SQLite, local folder)",
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=port_number, default=8080)
    up.add_argument("--data-dir", default=os.environ.get("ANNOSYNC_DATA_DIR", "./annosync-data"))
    serve = add(
        "serve", "cli_service:cmd_serve", "the receiver on waitress (settings from the environment)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8080)
    worker = add("worker", "cli_service:cmd_worker", "an RQ worker with the scheduler")
    worker.add_argument("--burst", action="store_true", help="drain the queue and exit")
    worker.add_argument("--queues", help="comma-separated queue names")
    dbp = add("db", None, "database schema").add_subparsers(dest="db_command", required=True)
    add("upgrade", "cli_service:cmd_db_upgrade", "apply schema migrations", parent=dbp)
    deliveries = add("deliveries", None, "inspect and replay deliveries")
    dsub = deliveries.add_subparsers(dest="deliveries_command", required=True)
    dlist = add("list", "cli_ops:cmd_deliveries_list", "the newest deliveries", parent=dsub)
    which = dlist.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true")
    which.add_argument("--rejected", action="store_true")
    which.add_argument("--status", choices=["pending", "applied", "failed", "ignored", "rejected"])
    dlist.add_argument("--limit", type=int, default=50)
    replay = add("replay", "cli_ops:cmd_deliveries_replay", "apply deliveries again", parent=dsub)
    replay.add_argument("ids", type=int, nargs="+")
    st = add("status", "cli_ops:cmd_status", "per-project state")
    st.add_argument("--project", type=int)
    st.add_argument("--json", action="store_true")
    rs = add(
        "resync", "cli_ops:cmd_resync", "reconcile the bucket with the store (and Label Studio)"
    )
    rs.add_argument("--project", type=int, required=True)
    rs.add_argument(
        "--from-labelstudio",
        action="store_true",
        help="first pull the project's full state from Label Studio",
    )
    rs.add_argument("--dry-run", action="store_true", help="report, change nothing")
    cv = add(
        "convert", "cli_convert:cmd_convert", "convert a Label Studio export to a training format"
    )
    cv.add_argument(
        "input", type=Path, nargs="?", help="JSON export, JSONL file or folder of <id>.json"
    )
    cv.add_argument("-f", "--format", help="a format name (--list-formats lists them)")
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
    rb = add(
        "rebuild", "cli_ops:cmd_rebuild", "regenerate a project's exports from the stored tasks"
    )
    rb.add_argument("--project", type=int, required=True)
    rb.add_argument("--format", help="only this format (default: ANNOSYNC_EXPORT_FORMATS)")
    add("settings", "cli_ops:cmd_settings", "print the settings table (Markdown)")
    add("check", "cli_ops:cmd_check", "exit 0 if the database, Redis and the storage answer")
    conn = add(
        "connect", "cli_ops:cmd_connect", "add a webhook to annosync to every Label Studio project"
    )
    conn.add_argument("--receiver-url", required=True, help="annosync as Label Studio reaches it")
    conn.add_argument("--watch", type=seconds, default=0, metavar="S", help="repeat every S s")
    gens = add("generations", None, "pinned dataset generations")
    gsub = gens.add_subparsers(dest="generations_command", required=True)
    glist = add("list", "cli_ci:cmd_generations_list", "the retained generations", parent=gsub)
    glist.add_argument("--project", type=int, required=True)
    glist.add_argument("--json", action="store_true")
    gdiff = add(
        "diff", "cli_ci:cmd_generations_diff", "what changed between two generations", parent=gsub
    )
    gdiff.add_argument("--project", type=int, required=True)
    gdiff.add_argument("before", type=int)
    gdiff.add_argument("after", type=int)
    gdiff.add_argument("--json", action="store_true")
    pull = add(
        "pull", "cli_ci:cmd_pull", "materialise a generation in a folder, every sha256 verified"
    )
    pull.add_argument("--project", type=int, required=True)
    pull.add_argument("--generation", type=generation_number, default=None, metavar="N|latest")
    pull.add_argument("--format", help="only this format's files (or 'tasks')")
    pull.add_argument("--to", type=Path, required=True, help="a new or empty folder")
    trig = add("triggers", None, "CI trigger deliveries")
    tsub = trig.add_subparsers(dest="triggers_command", required=True)
    tlist = add("list", "cli_ci:cmd_triggers_list", "the newest trigger deliveries", parent=tsub)
    tlist.add_argument("--project", type=int)
    tlist.add_argument("--limit", type=int, default=50)
    tlist.add_argument("--json", action="store_true")
    treplay = add(
        "replay", "cli_ci:cmd_triggers_replay", "send trigger deliveries again", parent=tsub
    )
    treplay.add_argument("ids", type=int, nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``annosync`` command."""
    args = build_parser().parse_args(argv)
    return importlib.import_module("sync.cli_common").run(args)


if __name__ == "__main__":
    sys.exit(main())
