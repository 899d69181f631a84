"""The export fixes an outside fidelity check asked for (issue 19's numbered list): each test
here failed before its fix."""

from __future__ import annotations

import csv
import io
import time
import xml.etree.ElementTree as ET
import zipfile

import orjson
import pytest
from conftest import SECRET, delivery, make_settings, run_worker
from test_exports import poly, rect
from test_formats import IMAGE_CONFIG, _render, _task
from test_incremental import _annotation, _send, _tasks_created

from sync import archives, cli
from sync.exporters.files import file_stem
from sync.runtime import Runtime, set_runtime

LOCAL_FILE = "/data/local-files/?d=datasets/cam1/img_000004.jpg"


# 1. Label Studio local-files URLs keep their file name.
def test_a_local_files_url_keeps_its_file_name():
    assert file_stem(4, LOCAL_FILE) == ("4__img_000004", ".jpg")
    assert file_stem(5, "/data/local-files/?d=a%20b/c%2Bd.png") == ("5__c_d", ".png")
    task = _task(4, [rect(10, 10, 20, 20, "Car", width=1000, height=500)], {"image": LOCAL_FILE})
    files = _render("YOLO", [task], IMAGE_CONFIG)
    assert "labels/4__img_000004.txt" in files
    coco = orjson.loads(_render("COCO", [task], IMAGE_CONFIG)["result.json"])
    assert coco["images"][0]["file_name"] == "images/4__img_000004.jpg"


# 2. A rotated box wholly outside the image is dropped, not exported as a zero-size box.
def test_a_box_wholly_outside_the_image_is_dropped():
    outside = rect(50, 0, 20, 20, "Car", rotation=180, width=1000, height=500, rid="o")
    inside = rect(10, 10, 20, 20, "Car", width=1000, height=500, rid="i")
    task = _task(1, [outside, inside])
    yolo = _render("YOLO", [task], IMAGE_CONFIG)
    lines = yolo["labels/1__image.txt"].decode().splitlines()
    assert len(lines) == 1 and lines[0] == "1 0.2 0.2 0.2 0.2"
    coco = orjson.loads(_render("COCO", [task], IMAGE_CONFIG)["result.json"])
    assert [a["area"] > 0 for a in coco["annotations"]] == [True]
    assert _render("YOLO_OBB", [task], IMAGE_CONFIG)["labels/1__image.txt"].count(b"\n") == 1


# 3. YOLO_OBB corners are clipped to [0, 1] (Ultralytics skips such images as corrupt).
def test_obb_corners_are_clipped_to_the_image():
    task = _task(1, [rect(90, 80, 30, 40, "Car", rotation=30, width=1000, height=500)])
    line = _render("YOLO_OBB", [task], IMAGE_CONFIG)["labels/1__image.txt"].decode()
    numbers = [float(v) for v in line.split()[1:]]
    assert len(numbers) == 8 and all(0.0 <= v <= 1.0 for v in numbers)
    assert 1.0 in numbers  # it did reach past the edge


# 4. VOC writes the image size whenever an annotation records it.
def test_voc_writes_the_size_of_a_task_without_boxes():
    task = _task(1, [poly([[10, 10], [50, 10], [30, 40]], "tulip", width=640, height=480)])
    xml = ET.fromstring(_render("VOC", [task], IMAGE_CONFIG)["Annotations/1__image.xml"])
    assert (xml.findtext("size/width"), xml.findtext("size/height")) == ("640", "480")
    coco = orjson.loads(_render("COCO", [task], IMAGE_CONFIG)["result.json"])
    image = coco["images"][0]
    assert (image["width"], image["height"]) == (640, 480)
    assert type(image["width"]) is int


# 5. A data key equal to a control no annotation writes keeps Label Studio's column name.
def test_csv_names_a_data_column_as_label_studio_does():
    config = IMAGE_CONFIG.replace("</View>", '<TextArea name="quality" toName="image"/></View>')
    data = {"image": "gs://b/a.png", "quality": "blurry"}
    unused = _task(1, [rect(10, 10, 20, 20, "Car")], data)
    rows = list(
        csv.DictReader(io.StringIO(_render("CSV", [unused], config)["result.csv"].decode()))
    )
    assert rows[0]["quality"] == "blurry" and "_data_quality" not in rows[0]

    written = {"from_name": "quality", "to_name": "image", "type": "textarea"}
    written["value"] = {"text": ["sharp"]}
    used = _task(2, [written], data)
    text = _render("CSV", [unused, used], config)["result.csv"].decode()
    rows = list(csv.DictReader(io.StringIO(text)))  # both kept: the annotation's and the data's
    assert [(r["quality"], r["_data_quality"]) for r in rows] == [
        ("", "blurry"),
        ("sharp", "blurry"),
    ]


# 9. The same export zips to the same bytes.
def test_two_downloads_of_one_export_are_the_same_bytes(tmp_path, sqlite_url, redis_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    try:
        _send(rt, _tasks_created(range(1, 4)))
        _send(rt, _annotation(11, 1, [("box", "Car", 10, 5)], 1))
        run_worker(rt)
        first = io.BytesIO()
        archives.export_archive(rt, 1, "YOLO", first)
        time.sleep(2.1)  # zip timestamps have a 2 s resolution
        second = io.BytesIO()
        archives.export_archive(rt, 1, "YOLO", second)
        assert first.getvalue() == second.getvalue()
        assert "labels/1__photo.txt" in zipfile.ZipFile(first).namelist()
    finally:
        set_runtime(None)


# 10. Labels missing from the config: the first seen gets the next id and keeps it.
def test_an_unlisted_label_keeps_the_id_it_got_first(tmp_path, sqlite_url, redis_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    try:
        _send(rt, _tasks_created(range(1, 4)))
        _send(rt, _annotation(12, 2, [("box", "Zebra", 10, 5)], 1))
        run_worker(rt)
        _send(rt, _annotation(11, 1, [("box", "Ant", 10, 5)], 2))
        run_worker(rt)
        classes = rt.storage.get("exports/1/yolo/classes.txt").decode().splitlines()
        assert classes[-2:] == ["Zebra", "Ant"]  # arrival order, not task or name order
        zebra = classes.index("Zebra")
        _send(rt, delivery("13-TASKS_DELETED"))  # task 2
        _send(rt, _annotation(13, 3, [("box", "Zebra", 10, 5)], 3))
        run_worker(rt)
        again = rt.storage.get("exports/1/yolo/classes.txt").decode().splitlines()
        assert again.index("Zebra") == zebra and again[: len(classes)] == classes
    finally:
        set_runtime(None)


# 7 and 8. `rebuild`: every kept-fresh format stays listed, orphans go, the generation grows;
# a format that is not kept fresh, or does not fit, is refused.
@pytest.fixture
def bucket(tmp_path, sqlite_url, redis_url, monkeypatch):
    env = {
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_EXPORT_DEBOUNCE_MS": "0",
        "ANNOSYNC_EXPORT_FORMATS": "YOLO,COCO,MANIFEST,CSV,CONLL2003",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    formats = ("YOLO", "COCO", "MANIFEST", "CSV", "CONLL2003")
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, export_formats=formats))
    set_runtime(rt)
    _send(rt, _tasks_created(range(1, 3)))
    _send(rt, _annotation(11, 1, [("box", "Car", 10, 5)], 1))
    run_worker(rt)
    yield rt
    set_runtime(None)


def _state(rt) -> dict:
    return orjson.loads(rt.storage.get("exports/1/_state.json"))


def test_rebuild_repairs_removes_orphans_and_grows_the_generation(bucket, capsys):
    rt = bucket
    before = _state(rt)
    assert len(before["formats"]) > 1
    label = "exports/1/yolo/labels/1__photo.txt"
    good = rt.storage.get(label)
    rt.storage.put(label, b"damaged\n")
    rt.storage.put("exports/1/yolo/labels/999999__orphan.txt", b"0 0.5 0.5 0.1 0.1\n")
    rt.storage.put("exports/1/mine/notes.txt", b"the user's")
    assert cli.main(["rebuild", "--project", "1", "--format", "yolo"]) == 0
    assert "1 files no task owns removed" in capsys.readouterr().out
    assert rt.storage.get(label) == good
    assert rt.storage.get("exports/1/yolo/labels/999999__orphan.txt") is None
    assert rt.storage.get("exports/1/mine/notes.txt") == b"the user's"
    after = _state(rt)
    assert after["formats"] == before["formats"]
    assert after["generation"] == before["generation"] + 1
    assert cli.main(["rebuild", "--project", "1", "--format", "COCO"]) == 0
    again = _state(rt)
    assert again["formats"] == before["formats"]
    assert again["generation"] == after["generation"]  # nothing repaired: the same content


@pytest.mark.parametrize(
    ("fmt", "says"),
    [
        ("CONLL2003", "CONLL2003 does not fit project 1's label config"),
        ("VOC", "VOC is not kept fresh (ANNOSYNC_EXPORT_FORMATS"),
        ("NOPE", "unknown format NOPE"),
    ],
)
def test_rebuild_refuses_a_format_it_would_not_keep(bucket, capsys, fmt, says):
    before = _state(bucket)
    assert cli.main(["rebuild", "--project", "1", "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert _state(bucket) == before
    assert not [k for k in bucket.storage.list("exports/1/") if k.startswith("exports/1/voc/")]


# YOLO pose: key points of a box (parentID) after its box, one x y v per key point label.
POSE_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="bbox" toName="image"><Label value="cat"/></RectangleLabels>
<KeyPointLabels name="kp" toName="image"><Label value="nose"/><Label value="tail"/></KeyPointLabels>
</View>"""


def _point(label: str, x: float, y: float, parent: str | None) -> dict:
    item = {"id": f"k-{label}", "type": "keypointlabels", "from_name": "kp", "to_name": "image"}
    item |= {"original_width": 1000, "original_height": 500, "parentID": parent}
    item["value"] = {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}
    return item


def test_yolo_writes_pose_lines_for_key_points():
    box = rect(10, 10, 20, 40, "cat", width=1000, height=500, rid="b1")
    loose = _point("tail", 90, 90, None)  # no box: not in a pose dataset
    task = _task(1, [box, _point("nose", 15, 20, "b1"), loose])
    files = _render("YOLO", [task], POSE_CONFIG)
    line = files["labels/1__image.txt"].decode().strip()
    assert line == "0 0.2 0.3 0.2 0.4 0.15 0.2 2 0 0 0"
    assert "kpt_shape: [2, 3]" in files["data.yaml"].decode()
    assert "kpt_shape" not in _render("YOLO", [task], IMAGE_CONFIG)["data.yaml"].decode()


# BRUSH_TO_COCO: the brush mask as COCO's RLE, read back exactly by pycocotools.
BRUSH_CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="brush" toName="image"><Label value="road"/></BrushLabels>
<RectangleLabels name="bbox" toName="image"><Label value="car"/></RectangleLabels></View>"""


def test_brush_to_coco_writes_masks_pycocotools_reads_back(tmp_path):
    np = pytest.importorskip("numpy")
    from pycocotools.coco import COCO

    from sync.exporters import rle

    width, height = 40, 30
    mask = bytearray(width * height)
    for y in range(5, 12):  # a 10 x 7 block with a hole, and one stray pixel
        for x in range(8, 18):
            mask[y * width + x] = 255
    mask[8 * width + 12] = 0
    mask[29 * width + 39] = 255
    rgba = bytes(b for v in mask for b in (0, 0, 0, v))
    brush = {"id": "m", "type": "brushlabels", "from_name": "brush", "to_name": "image"}
    brush |= {"original_width": width, "original_height": height}
    brush["value"] = {"format": "rle", "rle": rle.encode(rgba), "brushlabels": ["road"]}
    box = rect(10, 10, 20, 20, "car", width=width, height=height, rid="b")
    task = _task(1, [box, brush])
    result = _render("BRUSH_TO_COCO", [task], BRUSH_CONFIG)["result_coco.json"]
    (tmp_path / "c.json").write_bytes(result)
    coco = COCO(str(tmp_path / "c.json"))
    [segment] = [a for a in coco.loadAnns(coco.getAnnIds()) if isinstance(a["segmentation"], dict)]
    expected = np.frombuffer(bytes(mask), dtype=np.uint8).reshape(height, width) > 0
    assert (coco.annToMask(segment) == expected).all()
    assert segment["bbox"] == [8, 5, 32, 25] and segment["area"] == 70 - 1 + 1
    assert coco.loadCats(segment["category_id"])[0]["name"] == "road"
    assert len(coco.getAnnIds()) == 2 and coco.imgs[1]["file_name"] == "images/1__image.png"
