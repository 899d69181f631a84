"""The receiver's gunicorn worker: gthread, with connections spread evenly over the workers.

With plain gthread every worker listens on the shared socket and whichever wakes first
accepts; keep-alive senders then stay on it. Measured here: wrk's 16 connections all landed
on one of two workers, halving throughput at random. This worker leaves a new connection to
a sibling that holds fewer (least connections): the siblings publish their counts on a
shared board. A deferral lasts at most ``MAX_DEFER_S``, after which the connection is
accepted anyway, so a wedged or dead sibling costs a pending connection a few milliseconds,
never an answer.

Connections opened while a sibling was not yet (or no longer) running would stay where they
landed for as long as the sender keeps them alive: measured here, right after start-up all
16 of wrk's connections sat on the worker that booted first, for the whole run. So a worker
holding at least two more than a sibling closes some after their current answer (the answer
says ``Connection: close``; the sender reconnects, and the new connection goes to the sibling).

Label Studio opens a new connection for every delivery (``requests.post``). There a worker
never defers to a sibling that is itself deferring, and a deferral pauses accepting for 1 ms
only: measured here with one connection per request, both workers deferring to each other
for 5 ms at a time left the CPU half idle (2,000 req/s on the bare endpoint vs 4,400 with
plain gthread; 4,100-4,460 with these rules).
"""

from __future__ import annotations

import mmap
import os
import select
import selectors
import struct
import time

from gunicorn.workers.gthread import ThreadWorker

SLOTS = 64
_SLOT = struct.Struct("qqdq")  # pid, open connections, last heartbeat (monotonic), listening
STALE_S = 3.0  # a sibling silent this long is gone (its loop beats at least every second)
PAUSE_S = 0.001
MAX_DEFER_S = 0.05
REBALANCE_EVERY_S = 0.1


class ConnectionBoard:
    """Per-worker connection counts in memory shared by the workers (made before the fork)."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _SLOT.size)

    def publish(self, slot: int, connections: int, listening: bool = True) -> None:
        """Record ``slot``'s count, whether it accepts connections now, and that it is alive."""
        _SLOT.pack_into(
            self._map, slot * _SLOT.size, os.getpid(), connections, time.monotonic(), listening
        )

    def leave(self, slot: int) -> None:
        """Free ``slot`` (its worker stops)."""
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0, 0.0, 0)

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The smallest count of a live, listening sibling of ``slot``'s worker (None: no
        such sibling). One that paused its own accepting is left out: two workers each
        deferring to the other would leave new connections waiting with both idle."""
        now, fewest = time.monotonic(), None
        for other in range(self.slots):
            pid, connections, beat, listening = _SLOT.unpack_from(self._map, other * _SLOT.size)
            if other != slot and pid and listening and now - beat < STALE_S:
                fewest = connections if fewest is None else min(fewest, connections)
        return fewest


BOARD = ConnectionBoard()  # at import, in the gunicorn master: inherited by every worker


class _LoopSelector(selectors.DefaultSelector):
    """The worker loop's selector; lets the worker act before each wait."""

    def __init__(self, worker: BalancedThreadWorker) -> None:
        super().__init__()
        self.worker = worker

    def select(self, timeout=None):
        return super().select(self.worker.before_wait(timeout))


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker that accepts a connection only if no sibling holds fewer."""

    def run(self) -> None:
        self.slot = self.age % BOARD.slots
        self._paused: list = []
        self._resume_at = 0.0
        self._deferring_since: float | None = None
        self._to_shed = 0
        self._next_rebalance = 0.0
        self.poller.close()
        self.poller = _LoopSelector(self)
        BOARD.publish(self.slot, 0)
        try:
            super().run()
        finally:
            BOARD.leave(self.slot)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def closing_when_unbalanced(environ, start_response):
            if self._to_shed > 0 and self._claim_shedding():
                start_response.__self__.force_close()  # gunicorn's Response: "Connection: close"
            return app(environ, start_response)

        self.wsgi = closing_when_unbalanced

    def _claim_shedding(self) -> bool:
        with self._lock:
            if self._to_shed <= 0:
                return False
            self._to_shed -= 1
            return True

    def accept(self, server, listener) -> None:
        """Accept one pending connection, unless a sibling should (see the module docstring)."""
        now = time.monotonic()
        fewest = BOARD.fewest_elsewhere(self.slot)
        if fewest is not None and self.nr_conns > fewest:
            self._deferring_since = self._deferring_since or now
            if now - self._deferring_since < MAX_DEFER_S:
                self._pause_listening(now)
                return
        self._deferring_since = None
        super().accept(server, listener)
        BOARD.publish(self.slot, self.nr_conns)

    def before_wait(self, timeout: float | None) -> float | None:
        """Beat, resume listening when a pause is over, and wait no longer than the pause."""
        if self._paused and time.monotonic() >= self._resume_at:
            self._resume_listening()
        BOARD.publish(self.slot, self.nr_conns, listening=not self._paused)
        self._plan_rebalance()
        if not self._paused:
            return timeout
        remaining = max(0.0, self._resume_at - time.monotonic())
        return remaining if timeout is None else min(timeout, remaining)

    def _plan_rebalance(self) -> None:
        """Every ``REBALANCE_EVERY_S``: how many connections to close so that no sibling
        holds two fewer than this worker (half the difference: the sibling gains them)."""
        now = time.monotonic()
        if now < self._next_rebalance:
            return
        self._next_rebalance = now + REBALANCE_EVERY_S
        fewest = BOARD.fewest_elsewhere(self.slot)
        excess = 0 if fewest is None else self.nr_conns - fewest
        self._to_shed = excess // 2 if excess >= 2 else 0

    def _pause_listening(self, now: float) -> None:
        if self._paused:  # a second listener reported in the same round
            return
        with self._lock:
            for sock in self.sockets:
                key = self.poller.get_key(sock)
                self.poller.unregister(sock)
                self._paused.append((sock, key.data))
        self._resume_at = now + PAUSE_S
        BOARD.publish(self.slot, self.nr_conns, listening=False)

    def _resume_listening(self) -> None:
        with self._lock:
            for sock, data in self._paused:
                self.poller.register(sock, selectors.EVENT_READ, data)
        readable, _, _ = select.select([sock for sock, _ in self._paused], [], [], 0)
        if not readable:  # a sibling took what was waiting: the next deferral starts afresh
            self._deferring_since = None
        self._paused = []
