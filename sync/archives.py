"""Direct export archives rendered in worker processes, away from the webhook threads.

Rendering a large project is seconds of CPU. Done on the receiver's own threads it would
hold the interpreter lock against the webhook threads (16 concurrent exports of a 10k-task
project left 0 of 96 webhooks answered within 1 s). So each archive is rendered by a process
of a small pool (``ANNOSYNC_EXPORT_WORKERS``, started on first use, run at a lower CPU
priority) into an unlinked temporary file that the caller streams. At most that many
archives are in progress at once: a request beyond them is refused with :class:`ExportsBusy`
at once, instead of holding a receiver thread while it waits.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO

from config.settings import Settings
from sync import documents, exports, media_sources
from sync.convert import read_tasks, render_into
from sync.errors import Busy
from sync.exporters import get_exporter
from sync.limits import Limits
from sync.materialise import zip_entry
from sync.runtime import Runtime
from sync.storage import StorageError

CHILD_NICENESS = 10
_child_runtime: Runtime | None = None


class ExportsBusy(Busy):
    """Every export worker is busy; the message says when to retry."""


class ArchivePool:
    """A bounded pool of export processes for one receiver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.export_workers)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def render(self, project_id: int, fmt: str) -> tuple[IO[bytes], int]:
        """The zip of ``fmt`` for ``project_id`` as an open file (at its start) and its
        size; the file is unlinked, so closing it frees it. Raises :class:`ExportsBusy`."""
        return self._run(_render, project_id, fmt)

    def render_snapshot(self, project_id: int, key: str, fmt: str) -> tuple[IO[bytes], int]:
        """As :meth:`render`, from the export snapshot stored at ``key``."""
        return self._run(_render_snapshot, project_id, fmt, key)

    def _run(self, render, *args) -> tuple[IO[bytes], int]:
        if not self._slots.acquire(blocking=False):
            raise ExportsBusy(
                f"{self.settings.export_workers} exports are being rendered; retry in a few seconds"
            )
        try:
            spool = tempfile.NamedTemporaryFile(prefix="annosync-export-", suffix=".zip")  # noqa: SIM115
            try:
                self._executor().submit(render, *args, spool.name).result()
                spool.seek(0, os.SEEK_END)
                size = spool.tell()
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
            return spool, size
        finally:
            self._slots.release()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.export_workers,
                    # A fresh interpreter, not a fork of a process running threads.
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_child,
                    initargs=(self.settings,),
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def _start_child(settings: Settings) -> None:
    global _child_runtime
    os.nice(CHILD_NICENESS)  # the receiver's own threads come first on a busy machine
    _child_runtime = Runtime(settings)


def _render(project_id: int, fmt: str, path: str) -> int:
    with open(path, "wb") as out:
        return export_archive(_child_runtime, project_id, fmt, out)


def _render_snapshot(project_id: int, fmt: str, key: str, path: str) -> int:
    rt = _child_runtime
    with tempfile.NamedTemporaryFile(prefix="annosync-snapshot-", suffix=".json") as copy:
        source = rt.storage.open(key)
        if source is None:
            raise StorageError(f"{key} is gone")
        with source:
            shutil.copyfileobj(source, copy, 1 << 20)
        copy.flush()
        with open(path, "wb") as out:
            return _zip_rendered(rt, project_id, fmt, read_tasks(Path(copy.name)), out)


def export_archive(rt: Runtime, project_id: int, fmt: str, out) -> int:
    """Write a zip of one format rendered from the stored tasks into ``out`` (a binary file);
    returns the number of tasks. Nothing is written to storage."""
    with rt.sessions() as session:
        tasks = documents.project_documents(session, project_id)
        return _zip_rendered(rt, project_id, fmt, tasks, out)


def _zip_rendered(rt: Runtime, project_id: int, fmt: str, tasks, out) -> int:
    """Render ``tasks`` (``(document, bytes)``) to ``fmt`` with the project's context and
    write the files as a zip into ``out``; the number of tasks rendered."""
    exporter = get_exporter(fmt)
    # Read only: the class list that rendering may extend is never flushed (on SQLite a
    # flush would hold the one write lock, and every webhook with it, for the whole render).
    with (
        rt.sessions() as session,
        session.no_autoflush,
        tempfile.TemporaryDirectory() as staging,
    ):
        ctx = exports.context_for(session, project_id, rt.settings)
        limits = Limits.from_settings(rt.settings)
        images = media_sources.reader(rt.settings, rt.storage, project_id)
        summary = render_into(tasks, exporter, Path(staging), ctx, limits=limits, media=images)
        session.rollback()  # keep the stored class list
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(staging).rglob("*")):
                if path.is_file():
                    entry = zip_entry(path.relative_to(staging).as_posix())
                    with path.open("rb") as source, archive.open(entry, "w") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
    return summary.tasks
