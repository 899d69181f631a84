"""``annosync convert``: a Label Studio export to a training format, with the exporters the
kept-fresh exports use."""

from __future__ import annotations

import argparse
import sys

from sync import convert, media_sources
from sync.cli_common import UsageError, settings_from_env
from sync.exporters.capabilities import list_formats
from sync.limits import Limits
from sync.progress import Progress


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a Label Studio export (or task files) with the same exporters as the
    incremental path."""
    settings = settings_from_env()
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
            media=media_sources.reader(settings),
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
