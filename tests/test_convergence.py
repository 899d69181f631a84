"""Property: any order of the captured deliveries, with duplicates, converges to one state."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import orjson
from conftest import captured_sequence, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import admission, db, jobs
from sync.group_commit import GroupCommit
from sync.runtime import Runtime, set_runtime

SEQUENCE = captured_sequence()


def _replay(redis_url: str, order: list[int], drains_after: set[int]) -> dict[str, bytes]:
    """Apply deliveries in ``order`` (indexes into SEQUENCE), draining after the positions in
    ``drains_after``; return the bucket's files."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/a.db"
        db.upgrade(url)
        rt = Runtime(make_settings(Path(tmp), url, redis_url))
        set_runtime(rt)
        recorder = GroupCommit(rt)
        for position, index in enumerate(order):
            _name, body = SEQUENCE[index]
            raw = orjson.dumps(body)
            # A fresh webhook-id per copy: duplicates get past the dedupe and really apply twice.
            admission.accept(recorder, admission.parse(raw), raw, None, webhook_id=uuid.uuid4().hex)
            if position in drains_after:
                _drain_all(rt)
        _drain_all(rt)
        root = Path(tmp) / "data" / "bucket"
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.json")}
        db.make_engine(url).dispose()
        return files


def _drain_all(rt: Runtime) -> None:
    for project in (None, 1, 2, 3, 4):
        jobs.drain_project(jobs.NO_PROJECT if project is None else project)


_IN_ORDER: dict[str, dict[str, bytes]] = {}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_permutation_with_duplicates_converges(redis_url, data):
    if redis_url not in _IN_ORDER:
        _IN_ORDER[redis_url] = _replay(redis_url, list(range(len(SEQUENCE))), set())
    in_order = _IN_ORDER[redis_url]
    assert set(in_order) == {
        "tasks/1.json",
        "tasks/3.json",
        "tasks/4.json",
        "tasks/5.json",
        "tasks/6.json",
    }
    indexes = data.draw(st.permutations(range(len(SEQUENCE))))
    duplicates = data.draw(st.lists(st.sampled_from(range(len(SEQUENCE))), max_size=8))
    order = data.draw(st.permutations([*indexes, *duplicates]))
    drains = data.draw(st.sets(st.integers(0, len(order) - 1), max_size=4))
    assert _replay(redis_url, list(order), drains) == in_order
