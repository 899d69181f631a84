"""Trainable buckets: each task's image copied beside its labels, fetched only when its URL
(or, on a resync, its ETag) changes, failures kept per task and retried, never holding back
the labels; a YOLO data.yaml and a COCO file that resolve to the copied images."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import Receiver, delivery, make_settings, run_worker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_incremental import PROJECT, _annotation, _send
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from sync import media, sweeper
from sync.metrics import StateCollector
from sync.models import MediaFile
from sync.reconcile import resync_project
from sync.runtime import Runtime, set_runtime

FORMATS = ("YOLO", "YOLO_OBB", "COCO", "MANIFEST")


def _pixel(x: int, y: int, seed: int) -> bytes:
    return bytes(((x * 4 + seed * 40) % 256, y * 5 % 256, seed * 13 % 256))


def png(seed: int, width: int = 64, height: int = 48) -> bytes:
    """A small RGB PNG whose colours depend on ``seed`` (no imaging library needed)."""
    rows = b"".join(
        b"\0"
        + b"".join(
            bytes(((x * 4 + seed * 40) % 256, y * 5 % 256, seed * 13 % 256)) for x in range(width)
        )
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


class MediaServer:
    """Serves ``/img/<n>.png`` with ETags (304 on a match); counts requests per path;
    ``broken`` paths answer 404, ``html`` paths a login page."""

    def __init__(self) -> None:
        self.files = {f"/img/{n}.png": png(n) for n in range(1, 41)}
        self.hits: dict[str, int] = {}
        self.broken: set[str] = set()
        self.html: set[str] = set()
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def _app(self, request: Request) -> Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if request.path in self.html:
            return Response(b"<html>log in</html>", mimetype="text/html")
        data = self.files.get(request.path)
        if data is None or request.path in self.broken:
            return Response(b"missing", status=404)
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(data, mimetype="image/png", headers={"ETag": etag})

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def served():
    server = MediaServer()
    yield server
    server.close()


def _runtime(tmp_path, database_url, redis_url, **overrides) -> Runtime:
    options = {"export_formats": FORMATS, "media": True, "media_allow_private": True}
    options |= overrides
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, **options))
    set_runtime(rt)
    return rt


def _tasks(server: MediaServer, ids) -> dict:
    base = delivery("01-TASKS_CREATED")
    tasks = [
        dict(base["tasks"][0], id=n, inner_id=n, data={"image": f"{server.url}/img/{n}.png"})
        for n in ids
    ]
    return {"action": "TASKS_CREATED", "tasks": tasks, "project": PROJECT}


def _label(server: MediaServer, task_id: int, regions: list, stamp: int, image=None) -> dict:
    body = _annotation(1000 + task_id, task_id, regions, stamp)
    body["task"]["data"] = {"image": f"{server.url}/img/{image or task_id}.png"}
    return body


def _bucket(rt: Runtime) -> Path:
    return Path(rt.settings.storage_url.removeprefix("file://"))


def _fetch_outcomes(rt: Runtime) -> Counter:
    """``annosync_media_fetches_total`` by outcome, as a scrape reads it."""
    registry = CollectorRegistry()
    registry.register(StateCollector(rt))
    return Counter(
        {
            sample.labels["outcome"]: int(sample.value)
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
            if sample.name == "annosync_media_fetches_total"
        }
    )


def _row(rt: Runtime, task_id: int) -> MediaFile | None:
    with rt.sessions() as session:
        return session.get(MediaFile, task_id)


def test_every_label_file_has_its_image_and_the_dataset_files_resolve(
    tmp_path, database_url, redis_url, served
):
    rt = _runtime(tmp_path, database_url, redis_url)
    try:
        _send(rt, _tasks(served, range(1, 21)))
        for n in range(1, 21):
            _send(rt, _label(served, n, [("box", "Car", 10 + n, 5), ("box", "Bus", 50, 40)], n))
        run_worker(rt)
        yolo = _bucket(rt) / "exports/1/yolo"
        labels = sorted((yolo / "labels").glob("*.txt"))
        assert len(labels) == 20
        for label in labels:
            image = yolo / "images" / (label.stem + ".png")
            assert image.read_bytes() == served.files[f"/img/{label.stem.split('__')[0]}.png"]
        for label in (_bucket(rt) / "exports/1/yolo_obb/labels").glob("*.txt"):
            assert (label.parent.parent / "images" / (label.stem + ".png")).exists()

        data = yaml.safe_load((yolo / "data.yaml").read_text())
        assert "path" not in data and data["names"][0] == "Airplane"
        listed = []
        for split in ("train", "val", "test"):
            listing = yolo / data[split]
            for line in listing.read_text().splitlines():
                assert line.startswith("./")
                listed.append(listing.parent / line[2:])
        assert len(listed) == 20 and all(p.exists() for p in listed)

        from pycocotools.coco import COCO

        coco_dir = _bucket(rt) / "exports/1/coco"
        coco = COCO(str(coco_dir / "result.json"))
        assert len(coco.getImgIds()) == 20 and len(coco.getAnnIds()) == 40
        for image in coco.loadImgs(coco.getImgIds()):
            assert (coco_dir / image["file_name"]).exists()
            assert isinstance(image["width"], int) and isinstance(image["height"], int)
        assert sum(served.hits.values()) == 20  # each image fetched once, for every format
    finally:
        set_runtime(None)


def test_media_follow_the_url_and_leave_with_the_task(tmp_path, sqlite_url, redis_url, served):
    rt = _runtime(tmp_path, sqlite_url, redis_url)
    try:
        _send(rt, _tasks(served, [1, 2]))
        run_worker(rt)
        images = _bucket(rt) / "exports/1/yolo/images"
        assert sorted(p.name for p in images.iterdir()) == ["1__1.png", "2__2.png"]
        _send(rt, _label(served, 1, [("box", "Car", 10, 5)], 1))  # labels change, URL not
        run_worker(rt)
        assert served.hits == {"/img/1.png": 1, "/img/2.png": 1}

        # The URL changed: the new image, under its new stem; the old one goes.
        _send(rt, _label(served, 1, [("box", "Car", 10, 5)], 2, image=7))
        run_worker(rt)
        assert sorted(p.name for p in images.iterdir()) == ["1__7.png", "2__2.png"]
        assert (images / "1__7.png").read_bytes() == served.files["/img/7.png"]

        _send(rt, delivery("13-TASKS_DELETED"))  # task 2
        run_worker(rt)
        assert sorted(p.name for p in images.iterdir()) == ["1__7.png"]
        assert _row(rt, 2) is None
    finally:
        set_runtime(None)


def test_a_failed_fetch_is_kept_on_its_task_retried_and_never_holds_back_labels(
    tmp_path, sqlite_url, redis_url, served, monkeypatch
):
    monkeypatch.setattr(media, "BACKOFF_S", (0.3, 0.6))
    served.broken.add("/img/2.png")
    served.html.add("/img/3.png")
    rt = _runtime(tmp_path, sqlite_url, redis_url)
    try:
        before = _fetch_outcomes(rt)
        _send(rt, _tasks(served, [1, 2, 3]))
        _send(rt, _label(served, 2, [("box", "Car", 10, 5)], 1))
        run_worker(rt)
        assert _fetch_outcomes(rt) - before == Counter(fetched=1, failed=2)
        bucket = _bucket(rt) / "exports/1/yolo"
        assert (bucket / "labels/2__2.txt").read_text().startswith("1 ")  # labels are there
        assert (bucket / "images/1__1.png").exists()
        assert not (bucket / "images/2__2.png").exists()
        broken, html = _row(rt, 2), _row(rt, 3)
        assert broken.status == "owed" and broken.attempts == 1 and "HTTP 404" in broken.error
        assert "text/html, not a media file" in html.error

        served.broken.clear()
        with rt.sessions() as session:  # not due yet: nothing queued
            assert media.projects_due(session, now=0.0) == []
        import time

        time.sleep(0.4)
        sweeper.sweep(rt)
        run_worker(rt)
        assert (bucket / "images/2__2.png").read_bytes() == served.files["/img/2.png"]
        assert _row(rt, 2).status == "done" and _row(rt, 2).error is None
        assert _row(rt, 3).attempts == 2  # still an HTML page
        assert _fetch_outcomes(rt) - before == Counter(fetched=2, failed=3)
    finally:
        set_runtime(None)


def test_private_addresses_and_oversized_files_are_refused(tmp_path, sqlite_url, redis_url, served):
    rt = _runtime(tmp_path, sqlite_url, redis_url, media_allow_private=False)
    try:
        _send(rt, _tasks(served, [1]))
        run_worker(rt)
        assert "private or local address" in _row(rt, 1).error
        assert "ANNOSYNC_MEDIA_ALLOW_PRIVATE=1" in _row(rt, 1).error
    finally:
        set_runtime(None)
    rt = _runtime(tmp_path / "small", sqlite_url, redis_url, media_max_bytes=100)
    try:
        _send(rt, _tasks(served, [2]))
        run_worker(rt)
        assert "more than 100" in _row(rt, 2).error
    finally:
        set_runtime(None)


def test_resync_copies_lost_media_again_and_asks_the_rest_by_etag(
    tmp_path, sqlite_url, redis_url, served
):
    rt = _runtime(tmp_path, sqlite_url, redis_url)
    try:
        _send(rt, _tasks(served, [1, 2]))
        run_worker(rt)
        images = _bucket(rt) / "exports/1/yolo/images"
        (images / "1__1.png").unlink()
        (_bucket(rt) / "exports/1/coco/images/2__2.png").write_bytes(b"damaged")
        summary = resync_project(rt, 1)
        assert summary.media == 2 and summary.deleted == 0
        assert "2 media files owed again" in summary.line()
        run_worker(rt)
        assert (images / "1__1.png").read_bytes() == served.files["/img/1.png"]
        coco = _bucket(rt) / "exports/1/coco/images/2__2.png"
        assert coco.read_bytes() == served.files["/img/2.png"]
        assert served.hits == {"/img/1.png": 2, "/img/2.png": 2}

        served.files["/img/2.png"] = png(99)  # changed at the source: a new ETag
        assert resync_project(rt, 1).media == 0
        run_worker(rt)
        assert (images / "2__2.png").read_bytes() == png(99)
        assert (images / "1__1.png").read_bytes() == served.files["/img/1.png"]  # 304
        assert served.hits == {"/img/1.png": 3, "/img/2.png": 3}
    finally:
        set_runtime(None)


def test_media_off_copies_nothing(tmp_path, sqlite_url, redis_url, served):
    rt = _runtime(tmp_path, sqlite_url, redis_url, media=False)
    try:
        _send(rt, _tasks(served, [1]))
        run_worker(rt)
        assert not (_bucket(rt) / "exports/1/yolo/images").exists() and served.hits == {}
        assert orjson.loads((_bucket(rt) / "tasks/1.json").read_bytes())["id"] == 1
    finally:
        set_runtime(None)


def _task_with(task_id: int, url: str) -> dict:
    base = delivery("01-TASKS_CREATED")
    task = dict(base["tasks"][0], id=task_id, inner_id=task_id, data={"image": url})
    return {"action": "TASKS_CREATED", "tasks": [task], "project": PROJECT}


@pytest.mark.parametrize("target", ["local", "s3"])
def test_s3_media_are_copied_server_side_or_streamed(
    tmp_path, sqlite_url, redis_url, s3_endpoint, s3_url, target
):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    source = f"media-{target}-{tmp_path.name[-8:]}".lower().replace("_", "-")
    client.create_bucket(Bucket=source)
    client.put_object(Bucket=source, Key="cam 1/a.png", Body=png(5), ContentType="image/png")
    storage = {"storage_url": s3_url} if target == "s3" else {}
    rt = _runtime(tmp_path, sqlite_url, redis_url, s3_endpoint_url=s3_endpoint, **storage)
    try:
        _send(rt, _task_with(1, f"s3://{source}/cam%201/a.png"))
        run_worker(rt)
        key = "exports/1/yolo/images/1__a.png"
        assert rt.storage.get(key) == png(5)
        assert rt.storage.get("exports/1/coco/images/1__a.png") == png(5)
        row = _row(rt, 1)
        assert row.status == "done" and row.etag
        assert (row.size is None) == (target == "s3")  # server-side: no bytes through us
        client.put_object(Bucket=source, Key="cam 1/a.png", Body=png(6), ContentType="image/png")
        resync_project(rt, 1)  # asked again with its ETag: changed, so copied again
        run_worker(rt)
        assert rt.storage.get(key) == png(6)
    finally:
        set_runtime(None)


class LabelStudioFiles:
    """Label Studio's file endpoints: answers only with the right API token, and records the
    exact requests."""

    def __init__(self, token: str) -> None:
        self.token, self.requests = token, []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def _app(self, request: Request) -> Response:
        self.requests.append((request.full_path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Token {self.token}":
            return Response(b'{"detail": "no"}', status=401, mimetype="application/json")
        return Response(png(8), mimetype="image/png")


def test_label_studio_uploads_and_local_files(tmp_path, sqlite_url, redis_url):
    ls = LabelStudioFiles("ls-token-123")
    root = tmp_path / "ls-root"
    (root / "datasets/cam1").mkdir(parents=True)
    (root / "datasets/cam1/img_000004.jpg").write_bytes(png(4))
    (tmp_path / "secret.jpg").write_bytes(b"outside the root")
    rt = _runtime(
        tmp_path,
        sqlite_url,
        redis_url,
        media_allow_private=False,  # Label Studio's own address is allowed all the same
        label_studio_url=ls.url,
        label_studio_api_key="ls-token-123",
        media_local_files_root=str(root),
    )
    try:
        _send(rt, _task_with(1, "/data/upload/3/0a1b2c-photo.png"))
        _send(rt, _task_with(2, "/data/local-files/?d=datasets/cam1/img_000004.jpg"))
        _send(rt, _task_with(3, "/data/local-files/?d=../secret.jpg"))
        run_worker(rt)
        assert ls.requests == [("/data/upload/3/0a1b2c-photo.png?", "Token ls-token-123")]
        assert rt.storage.get("exports/1/yolo/images/1__0a1b2c-photo.png") == png(8)
        assert rt.storage.get("exports/1/yolo/images/2__img_000004.jpg") == png(4)
        assert "outside ANNOSYNC_MEDIA_LOCAL_FILES_ROOT" in _row(rt, 3).error
    finally:
        ls.server.shutdown()
        set_runtime(None)


def test_gs_media_come_from_the_public_endpoint(
    tmp_path, sqlite_url, redis_url, served, monkeypatch
):
    """Google's endpoint is the outside world: a local stand-in checks the request path."""
    from sync.media_sources import GcsSource

    monkeypatch.setattr(GcsSource, "ENDPOINT", served.url)
    served.files["/my-bucket/img/3.png"] = png(3)
    rt = _runtime(tmp_path, sqlite_url, redis_url)
    try:
        _send(rt, _task_with(1, "gs://my-bucket/img/3.png"))
        run_worker(rt)
        assert served.hits == {"/my-bucket/img/3.png": 1}
        assert rt.storage.get("exports/1/yolo/images/1__3.png") == png(3)
    finally:
        set_runtime(None)


def test_convert_with_images_fetches_each_image_and_names_the_missing(
    tmp_path, served, monkeypatch, capsys
):
    from sync import cli

    served.broken.add("/img/2.png")
    export = [
        {"id": n, "data": {"image": f"{served.url}/img/{n}.png"}, "annotations": []}
        for n in (1, 2, 3)
    ]
    source = tmp_path / "export.json"
    source.write_bytes(orjson.dumps(export))
    monkeypatch.setenv("ANNOSYNC_MEDIA_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("ANNOSYNC_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert cli.main(["convert", str(source), "-f", "yolo_with_images", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "task 2: image not copied: GET 127.0.0.1" in printed.err and "HTTP 404" in printed.err
    assert "2 images (1 missing)" in printed.out
    assert (out / "images/1__1.png").read_bytes() == served.files["/img/1.png"]
    assert not (out / "images/2__2.png").exists() and (out / "labels/2__2.txt").exists()


def test_a_download_with_images_takes_the_buckets_copies(tmp_path, sqlite_url, redis_url, served):
    """`/api/projects/1/export?exportType=YOLO_WITH_IMAGES` over real HTTP: each image from
    the bucket (nothing fetched again); one the bucket lacks comes from its source."""
    token = "api-token-0123456789"
    rt = _runtime(tmp_path, sqlite_url, redis_url, api_token=token)
    receiver = Receiver(rt)
    try:
        _send(rt, _tasks(served, [1, 2]))
        run_worker(rt)
        assert served.hits == {"/img/1.png": 1, "/img/2.png": 1}
        (_bucket(rt) / "exports/1/yolo/images/2__2.png").unlink()
        (_bucket(rt) / "exports/1/coco/images/2__2.png").unlink()
        (_bucket(rt) / "exports/1/yolo_obb/images/2__2.png").unlink()
        answer = receiver.get(
            "/api/projects/1/export?exportType=YOLO_WITH_IMAGES",
            headers={"Authorization": f"Token {token}"},
        )
        assert answer.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert archive.read("images/1__1.png") == served.files["/img/1.png"]
        assert archive.read("images/2__2.png") == served.files["/img/2.png"]
        assert "labels/1__1.txt" in archive.namelist()
        assert served.hits == {"/img/1.png": 1, "/img/2.png": 2}
    finally:
        receiver.close()
        set_runtime(None)
