"""Kept-fresh exports: per-task outputs on each change, aggregates after; incremental == batch."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import orjson
import pytest
from conftest import SECRET, bucket, delivery, make_settings, run_worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from sync import admission, db, exports, media_sources, task_outputs
from sync.convert import context, convert
from sync.exporters import get_exporter
from sync.group_commit import GroupCommit
from sync.models import Project
from sync.runtime import Runtime, set_runtime

PROJECT = delivery("15-PROJECT_UPDATED")["project"]  # label config v2 (adds Truck)
PROJECT_V1 = delivery("03-ANNOTATION_CREATED")["project"]
LABELS = ["Airplane", "Car", "Truck", "Bicycle"]  # Bicycle is not in the config


_RECORDERS: dict[int, GroupCommit] = {}  # one per runtime, as a receiver process has


def _send(rt: Runtime, body: dict) -> None:
    raw = orjson.dumps(body)
    recorder = _RECORDERS.setdefault(id(rt), GroupCommit(rt))
    admission.accept(recorder, admission.parse(raw), raw, None, webhook_id=uuid.uuid4().hex)


def _tasks_created(ids, project: dict = PROJECT, host: str = "http://x") -> dict:
    base = delivery("01-TASKS_CREATED")
    tasks = []
    for n in ids:
        t = dict(
            base["tasks"][0], id=n, inner_id=n, data={"image": f"{host}/img/{n % 2}/photo.jpg"}
        )  # basenames collide
        tasks.append(t)
    return {"action": "TASKS_CREATED", "tasks": tasks, "project": project}


def _annotation(
    ann_id: int,
    task_id: int,
    regions: list,
    stamp: int,
    project: dict = PROJECT,
    host: str = "http://x",
) -> dict:
    body = delivery("05-ANNOTATION_UPDATED")
    result = []
    for n, (kind, label, x, y) in enumerate(regions):
        if kind == "box":
            result.append(
                {
                    "id": f"r{n}",
                    "type": "rectanglelabels",
                    "from_name": "bbox",
                    "to_name": "image",
                    "original_width": 1280,
                    "original_height": 720,
                    "value": {
                        "x": x,
                        "y": y,
                        "width": 10,
                        "height": 5,
                        "rotation": (x * 7) % 90,
                        "rectanglelabels": [label],
                    },
                }
            )
        else:
            result.append(
                {
                    "id": f"p{n}",
                    "type": "polygonlabels",
                    "from_name": "poly",
                    "to_name": "image",
                    "original_width": 1280,
                    "original_height": 720,
                    "value": {"points": [[x, y], [x + 5, y], [x, y + 5]], "polygonlabels": [label]},
                }
            )
    ts = f"2026-11-22T00:{stamp // 60:02d}:{stamp % 60:02d}.000000Z"
    body["annotation"].update(
        id=ann_id,
        task=task_id,
        result=result,
        updated_at=ts,
        created_at="2026-11-22T00:00:00.000000Z",
    )
    body["task"].update(id=task_id, data={"image": f"{host}/img/{task_id % 2}/photo.jpg"})
    body["project"] = project
    return body


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


# Every format the image config fits, kept fresh at once.
FORMATS = (
    "YOLO", "COCO", "MANIFEST", "YOLO_OBB", "VOC", "JSON", "JSON_MIN", "CSV", "TSV",
    "GCP_CSV", "GCP_JSONL", "DATAGYM", "YOLO_WITH_IMAGES", "YOLO_OBB_WITH_IMAGES",
    "COCO_WITH_IMAGES",
)  # fmt: skip


class Images:
    """A local server of the two images the tasks name (``/img/<0|1>/photo.jpg``)."""

    def __init__(self) -> None:
        self.files = {f"/img/{n}/photo.jpg": f"image {n}".encode() * 50 for n in (0, 1)}
        app = Request.application(
            lambda request: Response(self.files[request.path], mimetype="image/jpeg")
        )
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def images():
    served = Images()
    yield served
    served.server.shutdown()


def _assert_incremental_equals_batch(rt: Runtime, tmp: Path) -> None:
    root = bucket(rt)
    config = tmp / "config.xml"
    config.write_text(PROJECT["label_config"])
    exports = root / "exports" / "1"
    (root / "tasks").mkdir(parents=True, exist_ok=True)  # every task may have been deleted
    for fmt in rt.settings.export_formats:
        exporter = get_exporter(fmt)
        out = tmp / f"batch-{fmt}"
        ctx = context(config, exports / "yolo" / "classes.txt")
        # The images come from their source here, never from the bucket.
        images = media_sources.reader(rt.settings)
        convert(root / "tasks", fmt, out, ctx, overwrite=True, media=images)
        if exporter.folder:
            kept = _tree(exports / exporter.folder)
            if exporter.media_folder and not getattr(exporter, "with_media", False):
                # Its images (media sync) are what X_WITH_IMAGES's are: compared there.
                kept = {k: v for k, v in kept.items() if not k.startswith("images/")}
            assert kept == _tree(out), fmt
            if getattr(exporter, "with_media", False):  # not vacuous: every task has its image
                live = len(list((root / "tasks").glob("*.json")))
                assert sum(key.startswith("images/") for key in kept) == live, fmt
        else:
            for name, data in _tree(out).items():
                assert (exports / name).read_bytes() == data, fmt


region = st.tuples(
    st.sampled_from(["box", "poly"]),
    st.sampled_from(LABELS),
    st.integers(0, 80),
    st.integers(0, 80),
)
operation = st.one_of(
    st.tuples(
        st.just("annotate"), st.integers(1, 6), st.integers(1, 4), st.lists(region, max_size=3)
    ),
    st.tuples(st.just("delete_annotation"), st.integers(1, 6)),
    st.tuples(st.just("delete_task"), st.integers(1, 4)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(operation, min_size=1, max_size=12), drain_every=st.integers(1, 5))
def test_incremental_exports_equal_batch_convert(redis_url, images, ops, drain_every):
    """Every kept-fresh format, media included, equals `convert` of the stored tasks."""
    Redis.from_url(redis_url).flushdb()  # each example starts from empty queues
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp}/a.db"
        db.upgrade(url)
        options = {"export_formats": FORMATS, "media": True, "media_allow_private": True}
        rt = Runtime(make_settings(tmp, url, redis_url, **options))
        set_runtime(rt)
        _send(rt, {"action": "PROJECT_UPDATED", "project": PROJECT})
        _send(rt, _tasks_created([1, 2, 3, 4], host=images.url))
        owner: dict[int, int] = {}
        for n, op in enumerate(ops, start=1):
            if op[0] == "annotate":
                _, ann_id, task_id, regions = op
                task_id = owner.setdefault(ann_id, task_id)  # an annotation keeps its task
                _send(rt, _annotation(ann_id, task_id, regions, n, host=images.url))
            elif op[0] == "delete_annotation":
                _send(
                    rt,
                    {
                        "action": "ANNOTATIONS_DELETED",
                        "annotations": [{"id": op[1]}],
                        "project": PROJECT,
                    },
                )
            else:
                _send(rt, {"action": "TASKS_DELETED", "tasks": [{"id": op[1]}], "project": PROJECT})
            if n % drain_every == 0:
                run_worker(rt)
        run_worker(rt)
        _assert_incremental_equals_batch(rt, tmp)
        db.make_engine(url).dispose()


def _setup(rt: Runtime) -> None:
    _send(rt, {"action": "PROJECT_UPDATED", "project": PROJECT_V1})
    _send(rt, _tasks_created([1, 2, 3], PROJECT_V1))
    _send(rt, _annotation(1, 1, [("box", "Car", 10, 10)], 1, PROJECT_V1))
    _send(rt, _annotation(2, 2, [("poly", "Airplane", 20, 20)], 2, PROJECT_V1))
    run_worker(rt)


def _state(rt: Runtime) -> dict:
    return orjson.loads((bucket(rt) / "exports/1/_state.json").read_bytes())


def test_one_change_rewrites_one_label_file_and_bumps_the_generation(runtime):
    _setup(runtime)
    labels = bucket(runtime) / "exports/1/yolo/labels"
    before = {p.name: p.stat().st_mtime_ns for p in labels.iterdir()}
    generation = _state(runtime)["generation"]
    _send(runtime, _annotation(1, 1, [("box", "Car", 30, 30)], 3, PROJECT_V1))
    run_worker(runtime)
    after = {p.name: p.stat().st_mtime_ns for p in labels.iterdir()}
    assert [name for name in after if after[name] != before[name]] == ["1__photo.txt"]
    assert _state(runtime)["generation"] == generation + 1
    run_worker(runtime)
    assert _state(runtime)["generation"] == generation + 1  # nothing changed: no new one


def test_a_new_label_in_the_config_is_appended_and_ids_do_not_move(runtime):
    _setup(runtime)
    yolo = bucket(runtime) / "exports/1/yolo"
    labels_before = _tree(yolo / "labels")
    assert (yolo / "classes.txt").read_text() == "Airplane\nCar\n"
    _send(runtime, delivery("15-PROJECT_UPDATED"))  # adds Truck
    run_worker(runtime)
    assert (yolo / "classes.txt").read_text() == "Airplane\nCar\nTruck\n"
    assert _tree(yolo / "labels") == labels_before


def test_a_label_outside_the_config_is_appended(runtime):
    _setup(runtime)
    _send(runtime, _annotation(3, 3, [("box", "Bicycle", 1, 1)], 4, PROJECT_V1))
    run_worker(runtime)
    yolo = bucket(runtime) / "exports/1/yolo"
    assert (yolo / "classes.txt").read_text() == "Airplane\nCar\nBicycle\n"
    assert (yolo / "labels/3__photo.txt").read_text().startswith("2 ")


def test_deleting_a_task_removes_its_outputs(runtime):
    _setup(runtime)
    _send(runtime, {"action": "TASKS_DELETED", "tasks": [{"id": 2}], "project": PROJECT_V1})
    run_worker(runtime)
    exports = bucket(runtime) / "exports/1"
    assert sorted(p.name for p in (exports / "yolo/labels").iterdir()) == [
        "1__photo.txt",
        "3__photo.txt",
    ]
    manifest = [orjson.loads(line) for line in (exports / "manifest.jsonl").read_bytes().split()]
    assert [m["task_id"] for m in manifest] == [1, 3]
    coco = orjson.loads((exports / "coco/result.json").read_bytes())
    assert [i["id"] for i in coco["images"]] == [1, 3]


def test_manifest_hashes_the_task_files(runtime):
    _setup(runtime)
    import hashlib

    root = bucket(runtime)
    for line in (root / "exports/1/manifest.jsonl").read_bytes().splitlines():
        item = orjson.loads(line)
        raw = (root / item["key"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(raw).hexdigest()
        assert item["bytes"] == len(raw)
        assert item["split"] in {"train", "val", "test"}


def test_rebuild_cli_restores_deleted_exports(runtime, tmp_path):
    _setup(runtime)
    exports = bucket(runtime) / "exports/1"
    good = _tree(exports)
    import shutil

    shutil.rmtree(exports)
    settings = runtime.settings
    env = {
        **os.environ,
        "ANNOSYNC_DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "ANNOSYNC_STORAGE_URL": settings.storage_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-m", "sync.cli", "rebuild", "--project", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "3 tasks rendered" in result.stdout
    rebuilt = _tree(exports)
    state = orjson.loads(rebuilt.pop("_state.json"))
    good_state = orjson.loads(good.pop("_state.json"))
    assert rebuilt == good
    # Repaired: readers of the live folders are told they changed.
    assert state["generation"] == good_state["generation"] + 1
    assert "files repaired" in result.stdout


def test_storage_is_written_while_no_database_write_is_open(tmp_path, sqlite_url, redis_url):
    """Task files, export files and aggregates go to storage before the statements that
    record them: receivers never wait on SQLite's write lock for a storage write."""
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, export_formats=FORMATS))
    set_runtime(rt)
    path = sqlite_url.split("///", 1)[1]
    seen: list[bool] = []
    put_many = rt.storage.put_many

    def put_many_checking(items):
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once while anyone holds the lock
            probe.execute("ROLLBACK")
            seen.append(True)
        except sqlite3.OperationalError:
            seen.append(False)
        finally:
            probe.close()
        put_many(items)

    rt.storage.put_many = put_many_checking
    _setup(rt)
    _send(rt, _annotation(1, 1, [("box", "Truck", 30, 30)], 3, PROJECT_V1))
    run_worker(rt)
    task_outputs.rebuild_project(rt, 1, batch=1)  # a chunk per task
    assert len(seen) >= 5 and all(seen)
    assert (bucket(rt) / "exports/1/yolo/labels/1__photo.txt").exists()


def test_aggregates_wait_for_a_rebuild_to_complete(runtime):
    _setup(runtime)
    before = (bucket(runtime) / "exports/1/_state.json").read_bytes()
    with runtime.sessions() as session:  # a new label config, its rebuild one chunk in
        project = session.get(Project, 1)
        project.config_version += 1
        project.export_changes += 1
        session.commit()
    exports.write_aggregates(runtime, 1)
    assert (bucket(runtime) / "exports/1/_state.json").read_bytes() == before
    _send(runtime, _annotation(1, 1, [("box", "Car", 30, 30)], 3, PROJECT_V1))
    run_worker(runtime)  # the drain rebuilds, then the aggregates follow
    assert _state(runtime)["generation"] > orjson.loads(before)["generation"]
