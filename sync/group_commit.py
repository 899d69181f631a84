"""Group commit: the deliveries of concurrent requests recorded in shared transactions.

Every request thread of a receiver process hands its delivery to one writer thread and waits;
the writer takes everything waiting (up to ``MAX_BATCH``), inserts it in one statement and one
commit, then asks once per project for a drain. Under load that is one commit and one Redis
round trip for many deliveries; idle, a delivery is written at once (nothing waits to fill a
batch). A request is answered only after its own commit: durability is unchanged.

Requests still being parsed and checked are counted (:meth:`GroupCommit.arriving`): the
writer waits for them, at most ``GATHER_S``, before it writes. Without that wait,
batches under full load would mostly hold one delivery (a write is shorter than the interval
between deliveries of one process), each paying its own commit and Redis round trip.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from sync import inbox, jobs
from sync.errors import DatabaseUnavailable

log = logging.getLogger("annosync.group_commit")
MAX_BATCH = 128
GATHER_S = 0.002


class _Waiting:
    __slots__ = ("done", "error", "result", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row, self.result, self.error = row, None, None
        self.done = threading.Event()


class GroupCommit:
    """Records inbox rows for the threads of one process (see the module docstring)."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the pid whose writer thread runs (forks need their own)
        self._engine = rt.engine
        self._arriving = 0  # requests between arriving() and their answer
        self._count_lock = threading.Lock()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a request that may record a delivery: the writer waits for it a little."""
        with self._count_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._arriving -= 1

    def warm(self) -> None:
        """Start the writer and open its database connection before the first delivery;
        a database that is down now is not an error (deliveries then answer 503)."""
        self._start_writer()
        try:
            self._engine.connect().close()
        except DatabaseUnavailable as exc:
            log.warning("database not reachable at start: %s", type(exc).__name__)

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
            self._write(self._gather(pending))

    def _gather(self, pending: queue.SimpleQueue) -> list[_Waiting]:
        """What is waiting, plus what requests in flight bring within ``GATHER_S``."""
        batch = [pending.get()]
        deadline = None
        while len(batch) < MAX_BATCH:
            try:
                batch.append(pending.get_nowait())
                continue
            except queue.Empty:
                if self._arriving <= len(batch):  # no other request is on its way
                    return batch
            deadline = deadline or time.monotonic() + GATHER_S
            try:
                batch.append(pending.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return batch
        return batch

    def _write(self, batch: list[_Waiting]) -> None:
        """Record ``batch`` in one transaction; if that fails, each member alone, so that a
        delivery that cannot be recorded fails by itself and every other is answered for what
        happened to it (a failed transaction recorded none of them)."""
        try:
            try:
                results = inbox.record_many(self._engine, [w.row for w in batch])
                for waiting, result in zip(batch, results, strict=True):
                    waiting.result = result
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    log.warning(
                        "group commit failed (%s); recording one by one", type(exc).__name__
                    )
                    for waiting in batch:
                        self._write_alone(waiting)
            # Before anyone is answered: a 202 means the drain was asked for (or Redis is down
            # and the sweep will ask).
            recorded = [w.result for w in batch if w.result is not None]
            self._request_drains({r.project_id for r in recorded if r.status == inbox.PENDING})
        finally:
            for waiting in batch:
                waiting.done.set()

    def _write_alone(self, waiting: _Waiting) -> None:
        try:
            waiting.result = inbox.record_many(self._engine, [waiting.row])[0]
        except Exception as exc:  # this request answers for itself (503)
            waiting.error = exc

    def _request_drains(self, projects: set[int | None]) -> None:
        for project_id in projects:
            try:
                jobs.request_drain(self.rt.redis, self.rt.settings.queue_name, project_id)
            except RedisError as exc:
                log.warning("deliveries recorded; queue unavailable, the sweep will: %s", exc)
                return
