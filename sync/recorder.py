"""Group commit: the deliveries of concurrent requests recorded in shared transactions.

Every request thread of a receiver process hands its delivery to one writer thread and waits;
the writer takes everything waiting (up to ``MAX_BATCH``), inserts it in one statement and one
commit, then asks once per project for a drain. Under load that is one commit and one Redis
round trip for many deliveries; idle, a delivery is written at once (nothing waits to fill a
batch). A request is answered only after its own commit: durability is unchanged.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from redis.exceptions import RedisError

from sync import db, inbox, jobs

log = logging.getLogger("annosync.recorder")
MAX_BATCH = 128


class _Waiting:
    __slots__ = ("done", "error", "result", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row, self.result, self.error = row, None, None
        self.done = threading.Event()


class GroupRecorder:
    """Records inbox rows for the threads of one process (see the module docstring)."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the pid whose writer thread runs (forks need their own)
        self._engine = db.make_engine(rt.settings.database_url)

    def record(self, row: dict[str, Any]) -> inbox.Recorded:
        """Record one row; raises what the database raised (the caller answers 503)."""
        self._start_writer()
        waiting = _Waiting(row)
        self._queue.put(waiting)
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.result

    def _start_writer(self) -> None:
        if self._owner == os.getpid():
            return
        with self._lock:
            if self._owner != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._write_forever, name="recorder", daemon=True).start()
                self._owner = os.getpid()

    def _write_forever(self) -> None:
        pending = self._queue
        while True:
            batch = [pending.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[_Waiting]) -> None:
        try:
            results = inbox.insert_many(self._engine, [w.row for w in batch])
            for waiting, result in zip(batch, results, strict=True):
                waiting.result = result
            # Before anyone is answered: a 202 means the drain was asked for (or Redis is down
            # and the sweep will ask).
            self._request_drains({r.project_id for r in results if r.status == inbox.PENDING})
        except Exception as exc:  # each waiting request answers for itself (503)
            for waiting in batch:
                waiting.error = exc
        finally:
            for waiting in batch:
                waiting.done.set()

    def _request_drains(self, projects: set[int | None]) -> None:
        for project_id in projects:
            try:
                jobs.request_drain(self.rt.redis, self.rt.settings.queue_name, project_id)
            except RedisError as exc:
                log.warning("deliveries recorded; queue unavailable, the sweep will: %s", exc)
                return
