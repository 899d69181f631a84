"""Batch conversion (``annosync convert``): the same exporters as the incremental path.

Input is streamed (a Label Studio JSON export, a JSONL file, or a directory of
``<task_id>.json`` files); fragments are spooled to a temporary file, so memory stays
bounded by one task plus an index. Output is built in a temporary folder beside OUT and
moved into place at the end: a failed conversion leaves no half-written OUT.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from config.validation import task_shape_problem
from sync.errors import AnnosyncError, InvalidInput
from sync.exporters import ExportContext, get_exporter, render_checked
from sync.exporters.base import DEFAULT_SPLIT
from sync.exporters.capabilities import unfit_reason
from sync.exporters.classes import context_from_config
from sync.exporters.files import file_stem, image_url
from sync.jsonstream import JSONStreamError, iter_array
from sync.labelconfig import LabelConfigError, parse_label_config
from sync.limits import Limits
from sync.storage import check_key
from sync.task_file import encode_task


class ConvertError(InvalidInput):
    """Bad input for a conversion (exit 2); the message is one line."""


@dataclass
class ConvertSummary:
    tasks: int
    files: int
    classes: list[str]
    failed: dict[int, str] = field(default_factory=dict)  # task id -> why not rendered
    images: int = 0  # images copied (``*_WITH_IMAGES``)
    media_failed: dict[int, str] = field(default_factory=dict)  # task id -> why no image


def read_tasks(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """``(task, raw bytes)`` from an export, a JSONL file, or a folder of task files.

    ``raw`` is the file's bytes for a folder (so manifests hash the stored objects), else the
    task as annosync would store it.
    """
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix == ".json" and p.stem.isdigit()]
        for file in sorted(files, key=lambda p: int(p.stem)):
            raw = file.read_bytes()
            yield _task(_loads(raw, file.name), file.name), raw
    elif path.suffix == ".jsonl":
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    task = _task(_loads(line, f"line {number}"), f"line {number}")
                    yield task, encode_task(task)
    else:
        with path.open("rb") as handle:
            try:
                for n, item in enumerate(iter_array(iter(lambda: handle.read(1 << 20), b""))):
                    task = _task(item, f"task #{n}")
                    yield task, encode_task(task)
            except JSONStreamError as exc:
                raise ConvertError(f"{path.name}: not a JSON list of tasks ({exc})") from None


def _loads(raw: bytes, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConvertError(f"{where}: not JSON ({exc})") from None


def _task(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, dict) and "completions" in item and "annotations" not in item:
        item = {**item, "annotations": item["completions"]}  # legacy exports
        del item["completions"]
    problem = task_shape_problem(item)
    if problem:
        raise ConvertError(f"{where}: {problem}")
    if "data" not in item:  # JSON_MIN or CSV rows: the labels are not where a task has them
        raise ConvertError(
            f"{where}: no `data` object; convert reads Label Studio's JSON export, JSONL or "
            "task files (not JSON_MIN or CSV)"
        )
    return item


def one_project(tasks, project: int | None) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The tasks of ``project``; without one, all of them, refusing input that mixes
    projects (a bucket's ``tasks/`` holds every project's: text and image tasks alike)."""
    seen = None
    for task, raw in tasks:
        owner = task.get("project")
        if project is not None:
            if owner == project:
                yield task, raw
            continue
        if owner is not None and seen is not None and owner != seen:
            raise ConvertError(
                f"the input mixes projects {seen} and {owner}: choose one with --project"
            )
        seen = owner if owner is not None else seen
        yield task, raw


def context(config: Path | None, classes: Path | None, split=DEFAULT_SPLIT) -> ExportContext:
    """The export context from a label config file and/or an existing classes.txt."""
    parsed = None
    if config is not None:
        try:
            parsed = parse_label_config(config.read_text())
        except (OSError, LabelConfigError, UnicodeDecodeError) as exc:
            raise ConvertError(f"{config}: {exc}") from None
    known = []
    if classes is not None:
        try:
            known = [line for line in classes.read_text().splitlines() if line]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConvertError(f"{classes}: {exc}") from None
    return context_from_config(0, known, parsed, split)


def convert(
    source: Path,
    fmt: str,
    out: Path,
    ctx: ExportContext,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    limits: Limits | None = None,
    media: MediaReader | None = None,
    project: int | None = None,
) -> ConvertSummary:
    """Convert every task of ``source`` (of ``project`` only, if given) into ``fmt`` under
    ``out`` (with ``media``, the images of a ``*_WITH_IMAGES`` format)."""
    try:
        exporter = get_exporter(fmt)
    except KeyError as exc:
        raise ConvertError(str(exc.args[0])) from None
    reason = unfit_reason(exporter, ctx.config)
    if reason:
        raise ConvertError(reason)
    if not source.exists():
        raise ConvertError(f"{source}: no such file or folder")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConvertError(f"{out} exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        tasks = one_project(read_tasks(source), project)
        summary = render_into(tasks, exporter, staging, ctx, progress, limits, media)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def render_into(
    tasks: Iterable[tuple[dict[str, Any], bytes]],
    exporter,
    staging: Path,
    ctx: ExportContext,
    progress=None,
    limits: Limits | None = None,
    media: MediaReader | None = None,
) -> ConvertSummary:
    """Render ``tasks`` with ``exporter`` into the fresh folder ``staging``: per-task files
    as they come, fragments spooled to disk, aggregates last in task-id order. A task over
    ``limits`` or that the exporter cannot render is left out and named in ``failed``, as
    the kept-fresh exports do. A ``*_WITH_IMAGES`` format gets each task's image from
    ``media``; one it cannot read is named in ``media_failed`` (the labels stay)."""
    storage = _StagingWriter(staging)
    spool = _FragmentSpool()
    failed: dict[int, str] = {}
    images: dict[int, str] = {}  # task id -> why its image is missing
    with_media = getattr(exporter, "with_media", False) and media is not None
    files = 0
    with spool:
        for count, (task, raw) in enumerate(tasks, start=1):
            if progress:
                progress(count)
            result = render_checked([exporter], task, raw, ctx, limits)
            if isinstance(result, str):
                failed[task["id"]] = result
                continue
            [result] = result
            for path, data in result.files.items():
                storage.put(path, data)
            files += len(result.files)
            if with_media:
                files += _add_image(storage, media, task, exporter, ctx, images)
            spool.add(task["id"], result.fragment)
        aggregates = exporter.aggregate(spool.in_id_order(), ctx)
    for path, data in aggregates.items():
        storage.put(path, data)
    copied = spool.tasks - len(images) if with_media else 0
    summary = ConvertSummary(spool.tasks, files + len(aggregates), list(ctx.classes), failed)
    summary.images, summary.media_failed = copied, images
    return summary


class _FragmentSpool:
    """The tasks' fragments in a temporary file, read back in task-id order for the
    aggregates. Memory per task is two 8-byte numbers (its id and where its fragment
    starts), not a Python object: the peak RSS of a 100k-task convert stays below the
    converter's (bench/convert.py)."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        self.ids, self.starts = array("q"), array("q")  # in arrival order
        self.tasks = 0  # distinct ids, once in_id_order was asked

    def __enter__(self) -> _FragmentSpool:
        return self

    def __exit__(self, *_exc) -> None:
        self.file.close()

    def add(self, task_id: int, fragment: bytes) -> None:
        self.ids.append(task_id)
        self.starts.append(self.file.tell())
        self.file.write(fragment)

    def in_id_order(self) -> Iterator[bytes]:
        """Each task's fragment by ascending id; of a repeated id, the last one added (and
        ``tasks`` set to the number of distinct ids)."""
        self.starts.append(self.file.tell())  # fragment n ends where n + 1 starts
        ids = self.ids
        order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: arrival order kept
        # Of a repeated id only the last position counts: a later fragment replaces it.
        last = [
            n for at, n in enumerate(order) if at + 1 == len(order) or ids[order[at + 1]] != ids[n]
        ]
        self.tasks = len(last)
        return self._read(last)

    def _read(self, positions: list[int]) -> Iterator[bytes]:
        for n in positions:
            self.file.seek(self.starts[n])
            yield self.file.read(self.starts[n + 1] - self.starts[n])


#: Reads a task's image for a ``*_WITH_IMAGES`` export: ``(url, path in the format's
#: folder) -> bytes``, raising :class:`AnnosyncError` with the reason.
MediaReader = Callable[[str, str], bytes]


def _add_image(storage, media: MediaReader, task, exporter, ctx, images: dict) -> int:
    url = image_url(task, ctx.object_value)
    stem, ext = file_stem(task["id"], url)
    path = f"{exporter.media_folder}/{stem}{ext}"
    try:
        storage.put(path, media(url, path))
    except AnnosyncError as exc:
        images[task["id"]] = str(exc)
        return 0
    return 1


class _StagingWriter:
    """Writes files into a fresh staging folder we created (no symlinks can be in it):
    keys checked, no temp names and no fsync, since the whole folder is moved into place
    only at the end."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.made: set[str] = set()

    def put(self, key: str, data: bytes) -> None:
        path = os.path.join(self.root, check_key(key))
        folder = os.path.dirname(path)
        if folder not in self.made:
            os.makedirs(folder, exist_ok=True)
            self.made.add(folder)
        with open(path, "wb") as handle:  # the folder only becomes OUT once complete
            handle.write(data)


def _replace(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
