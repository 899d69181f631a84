"""Export snapshots shaped like Label Studio's, driven by label-studio-sdk's own client
pointed at annosync: created from a pinned generation, listed, fetched, downloaded in JSON
and in a training format, deleted; filters and serialization options as Label Studio's."""

from __future__ import annotations

import hashlib
import io
import zipfile

import orjson
import pytest
from conftest import Receiver, make_settings, run_worker
from label_studio_sdk.client import LabelStudio
from test_incremental import _annotation, _send, _tasks_created

from sync import snapshots
from sync.runtime import Runtime, set_runtime

TOKEN = "snapshot-api-token"


@pytest.fixture
def served(tmp_path, database_url, redis_url):
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, api_token=TOKEN))
    set_runtime(rt)
    receiver = Receiver(rt)
    yield rt, receiver, LabelStudio(base_url=receiver.base, api_key=TOKEN)
    receiver.close()
    set_runtime(None)


def _project(rt) -> None:
    _send(rt, _tasks_created(range(1, 6)))
    run_worker(rt)
    _send(rt, _annotation(11, 1, [("box", "Car", 10, 10)], 1))
    _send(rt, _annotation(12, 2, [("box", "Airplane", 20, 20)], 2))
    skipped = _annotation(13, 3, [], 3)
    skipped["annotation"]["was_cancelled"] = True
    _send(rt, skipped)
    run_worker(rt)


def _download(client, export_id: int, export_type: str) -> bytes:
    return b"".join(client.projects.exports.download(1, export_id, export_type=export_type))


def test_the_sdk_client_creates_lists_downloads_and_deletes_a_snapshot(served):
    rt, _receiver, client = served
    _project(rt)
    made = client.projects.exports.create(1, title="for training")
    assert made.id and made.status in {"created", "in_progress", "completed"}
    run_worker(rt)  # the snapshot job
    got = client.projects.exports.get(1, made.id)
    assert got.status == "completed" and got.title == "for training"
    assert got.counters == {"task_number": 5, "annotation_number": 3, "prediction_number": 0}
    assert [e.id for e in client.projects.exports.list(1)] == [made.id]

    data = _download(client, made.id, "JSON")
    assert hashlib.md5(data).hexdigest() == got.md5
    tasks = orjson.loads(data)
    assert [t["id"] for t in tasks] == [1, 2, 3, 4, 5]
    assert tasks[0] == orjson.loads(rt.storage.get("tasks/1.json"))  # the task file's entry

    _send(rt, _annotation(14, 4, [("box", "Car", 30, 30)], 4))  # later labels do not leak in
    run_worker(rt)
    assert _download(client, made.id, "JSON") == data

    yolo = zipfile.ZipFile(io.BytesIO(_download(client, made.id, "YOLO")))
    labels = [n for n in yolo.namelist() if n.startswith("labels/")]
    assert len(labels) == 5 and "classes.txt" in yolo.namelist()

    client.projects.exports.delete(1, made.id)
    assert client.projects.exports.list(1) == []
    assert rt.storage.get(snapshots.key(1, made.id)) is None


def test_filters_and_serialization_options_as_label_studio_applies_them(served):
    rt, _receiver, client = served
    _project(rt)
    made = client.projects.exports.create(
        1,
        task_filter_options={"only_with_annotations": True, "skipped": "exclude"},
        annotation_filter_options={"usual": True},
        serialization_options={"annotations__completed_by": {"only_id": True}},
    )
    run_worker(rt)
    tasks = orjson.loads(_download(client, made.id, "JSON"))
    assert [t["id"] for t in tasks] == [1, 2]
    assert all(not isinstance(a["completed_by"], dict) for t in tasks for a in t["annotations"])


def test_a_snapshot_request_annosync_cannot_honour_is_refused_by_field(served):
    rt, receiver, _client = served
    _project(rt)
    auth = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"}
    bad = receiver.http.post(
        receiver.base + "/api/projects/1/exports/",
        data=orjson.dumps({"task_filter_options": {"skipped": "sometimes"}}),
        headers=auth,
        timeout=10,
    )
    assert bad.status_code == 400
    assert bad.json()["detail"][0]["path"] == "task_filter_options.skipped"
    view = receiver.http.post(
        receiver.base + "/api/projects/1/exports",
        data=orjson.dumps({"task_filter_options": {"view": 3}}),
        headers=auth,
        timeout=10,
    )
    assert view.status_code == 400 and view.json()["detail"][0]["path"].endswith("view")
    none = receiver.http.post(
        receiver.base + "/api/projects/77/exports", data=b"{}", headers=auth, timeout=10
    )
    assert none.status_code == 404
    missing = receiver.get("/api/projects/1/exports/999", headers=auth)
    assert missing.status_code == 404
