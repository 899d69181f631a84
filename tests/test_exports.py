"""Exporters on hand-written tasks, against Label Studio's own exports, and `convert`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import FIXTURES

from sync.convert import ConvertError, context, convert
from sync.exporters import ExportContext, get_exporter, render_checked
from sync.exporters.classes import config_classes
from sync.exporters.files import file_stem, split_of
from sync.exporters.regions import chosen_annotation
from sync.labelconfig import parse_label_config

CONFIG = FIXTURES / "configs" / "image-od-v2.xml"


def rect(x, y, w, h, label, rotation=0.0, width=1280, height=720, rid="r"):
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "bbox",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {
            "x": x,
            "y": y,
            "width": w,
            "height": h,
            "rotation": rotation,
            "rectanglelabels": [label],
        },
    }


def poly(points, label, width=1280, height=720):
    return {
        "id": "p",
        "type": "polygonlabels",
        "from_name": "poly",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"points": points, "polygonlabels": [label]},
    }


def task(task_id, results, image=None, **annotation):
    ann = {
        "id": task_id * 10,
        "result": results,
        "was_cancelled": False,
        "ground_truth": False,
        "updated_at": "2026-01-01T00:00:00.000000Z",
        **annotation,
    }
    return {
        "id": task_id,
        "data": {"image": image or f"s3://bucket/img/{task_id}.jpg"},
        "annotations": [ann],
    }


@pytest.fixture
def ctx():
    return ExportContext(1, config_classes(parse_label_config(CONFIG.read_text())), "image")


def render(fmt, t, ctx):
    return get_exporter(fmt).render_task(t, orjson.dumps(t), ctx)


def coco_of(t, ctx) -> dict:
    """The COCO result.json of one task, through the aggregate."""
    exporter = get_exporter("COCO")
    fragment = exporter.render_task(t, orjson.dumps(t), ctx).fragment
    result = orjson.loads(exporter.aggregate([fragment], ctx)["result.json"])
    return {"image": result["images"][0], "annotations": result["annotations"]}


def test_classes_come_from_region_tags_in_config_order():
    parsed = parse_label_config(CONFIG.read_text())
    assert config_classes(parsed) == ["Airplane", "Car", "Truck"]  # no Choices (Airport, Road)


def test_category_attribute_is_honoured():
    xml = """<View><Image name="i" value="$image"/>
      <RectangleLabels name="b" toName="i"><Label value="Cat" category="2"/>
      <Label value="Dog"/><Label value="Eel" category="0"/></RectangleLabels></View>"""
    assert config_classes(parse_label_config(xml)) == ["Eel", "Dog", "Cat"]


def test_yolo_rectangle_and_polygon(ctx):
    t = task(1, [rect(10, 20, 30, 15, "Car"), poly([[10, 10], [40, 12], [35, 40]], "Truck")])
    out = render("YOLO", t, ctx)
    lines = out.files["labels/1__1.txt"].decode().splitlines()
    assert lines == ["1 0.25 0.275 0.3 0.15", "2 0.1 0.1 0.4 0.12 0.35 0.4"]


def test_rotated_box_on_a_non_square_image_is_rotated_in_pixels(ctx):
    # 90 degrees around the top-left corner, on a 200x100 image: a 40x20 px box at (100, 10)
    # becomes the pixel box x 80..100, y 10..50.
    t = task(1, [rect(50, 10, 20, 20, "Car", rotation=90, width=200, height=100)])
    line = render("YOLO", t, ctx).files["labels/1__1.txt"].decode().split()
    assert [float(v) for v in line[1:]] == pytest.approx([0.45, 0.3, 0.1, 0.4], abs=1e-6)
    coco = coco_of(t, ctx)
    assert coco["annotations"][0]["bbox"] == pytest.approx([80.0, 10.0, 20.0, 40.0])


def test_latest_non_cancelled_annotation_counts_and_ground_truth_first(ctx):
    t = {
        "id": 5,
        "data": {"image": "x.jpg"},
        "annotations": [
            {"id": 1, "result": [rect(0, 0, 10, 10, "Car")], "updated_at": "2026-01-01T00:00:01Z"},
            {
                "id": 2,
                "result": [rect(0, 0, 20, 20, "Truck")],
                "updated_at": "2026-01-03T00:00:00Z",
                "was_cancelled": True,
            },
            {"id": 3, "result": [rect(0, 0, 30, 30, "Airplane")], "updated_at": "2026-01-02Z"},
        ],
    }
    assert chosen_annotation(t)["id"] == 3
    t["annotations"][0]["ground_truth"] = True
    assert chosen_annotation(t)["id"] == 1


def test_task_without_annotation_is_a_background_image(ctx):
    t = {"id": 9, "data": {"image": "a.png"}, "annotations": []}
    assert render("YOLO", t, ctx).files == {"labels/9__a.txt": b""}
    fragment = coco_of(t, ctx)
    assert fragment["annotations"] == [] and fragment["image"]["id"] == 9


def test_cancelled_only_task_exports_nothing(ctx):
    t = task(2, [rect(1, 1, 1, 1, "Car")], was_cancelled=True)
    assert render("YOLO", t, ctx).files == {"labels/2__2.txt": b""}


@pytest.mark.parametrize(
    ("url", "stem"),
    [
        ("http://h/a/b/cat.jpg", "7__cat"),
        ("../../etc/passwd", "7__passwd"),
        ("/data/upload/1/..%2F..%2Fx.png?token=abc#frag", "7__x"),
        ("s3://b/My%20Photo%20(1).JPG", "7__My_Photo_1"),
        ("http://h/\x00evil\n.jpg", "7__evil"),
        ("http://h/" + "a" * 500 + ".jpg", "7__" + "a" * 80),
        ("", "7__image"),
    ],
)
def test_hostile_image_urls_give_safe_stems(url, stem):
    got, _ext = file_stem(7, url)
    assert got == stem
    assert "/" not in got and ".." not in got and all(ord(c) >= 32 for c in got)


def test_same_basename_in_two_tasks_never_shares_a_label_file(ctx):
    a = render("YOLO", task(1, [], image="s3://x/a/img.jpg"), ctx).files
    b = render("YOLO", task(2, [], image="s3://x/b/img.jpg"), ctx).files
    assert set(a).isdisjoint(b)


def test_split_is_stable_and_near_the_ratios():
    splits = [split_of(n) for n in range(1, 20001)]
    assert splits == [split_of(n) for n in range(1, 20001)]
    share = {name: splits.count(name) / len(splits) for name in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.02)
    assert share["val"] == pytest.approx(0.1, abs=0.02)


def test_coco_ids_are_stable_per_region(ctx):
    t = task(3, [rect(0, 0, 10, 10, "Car", rid="a"), rect(5, 5, 10, 10, "Truck", rid="b")])
    first = coco_of(t, ctx)
    assert [a["id"] for a in first["annotations"]] == [30001, 30002]
    assert {a["image_id"] for a in first["annotations"]} == {3}


# -- against Label Studio's own export of the fixture project --------------------------


def _boxes_by_class_name(yolo_dir: Path, classes: list[str]) -> list[tuple[str, list[float]]]:
    out = []
    for file in sorted(yolo_dir.glob("labels/*.txt")):
        for line in file.read_text().splitlines():
            cls, *values = line.split()
            out.append((classes[int(cls)], [float(v) for v in values]))
    return sorted(out)


def test_yolo_matches_label_studio_converter_semantically(tmp_path):
    ours = tmp_path / "yolo"
    convert(FIXTURES / "exports" / "project-1-JSON.json", "YOLO", ours, context(CONFIG, None))
    theirs = FIXTURES / "exports" / "project-1-YOLO"
    ours_boxes = _boxes_by_class_name(ours, (ours / "classes.txt").read_text().split("\n"))
    theirs_boxes = _boxes_by_class_name(theirs, (theirs / "classes.txt").read_text().split("\n"))
    assert len(ours_boxes) == len(theirs_boxes)
    for (name_a, a), (name_b, b) in zip(ours_boxes, theirs_boxes, strict=True):
        assert name_a == name_b and a == pytest.approx(b, abs=1e-6)
    # Deliberate differences (SPEC section 5): class ids come from the config (Choices
    # 'Airport'/'Road' are not classes), and stems are '<task id>__<name>'.
    assert (ours / "classes.txt").read_text() == "Airplane\nCar\nTruck\n"
    assert sorted(p.name for p in (ours / "labels").iterdir()) == ["1__1.txt", "3__3.txt"]


def test_coco_matches_label_studio_converter_semantically(tmp_path):
    ours_dir = tmp_path / "coco"
    convert(FIXTURES / "exports" / "project-1-JSON.json", "COCO", ours_dir, context(CONFIG, None))
    theirs_path = FIXTURES / "exports" / "project-1-COCO" / "result.json"
    ours, theirs = (json.loads(p.read_text()) for p in (ours_dir / "result.json", theirs_path))

    def named(doc):
        names = {c["id"]: c["name"] for c in doc["categories"]}
        return sorted(
            (names[a["category_id"]], a["bbox"], a.get("segmentation") or [], a["area"])
            for a in doc["annotations"]
        )

    for (n1, b1, s1, a1), (n2, b2, s2, a2) in zip(named(ours), named(theirs), strict=True):
        assert n1 == n2
        assert b1 == pytest.approx(b2, abs=1e-3)
        assert [pytest.approx(x, abs=1e-3) for x in (s1[0] if s1 else [])] == (s2[0] if s2 else [])
        assert a1 == pytest.approx(a2, rel=1e-6)
    # Deliberate differences: image id = task id (theirs: list position), annotation ids are
    # stable per region, one image entry per task, no wall-clock date.
    assert [i["id"] for i in ours["images"]] == [1, 3]
    assert ours["info"]["date_created"] is None


def test_a_task_changed_in_place_renders_its_new_regions_in_every_format():
    exporters = [get_exporter("YOLO"), get_exporter("COCO")]
    ctx = ExportContext(project_id=1, classes=["Car", "Truck"], object_value="image")
    doc = task(1, [rect(0, 0, 50, 50, "Car")], image="a.jpg")
    first = render_checked(exporters, doc, b"{}", ctx)
    doc["annotations"][0]["result"] = [rect(50, 50, 10, 10, "Truck")]  # the same dict
    yolo, coco = render_checked(exporters, doc, b"{}", ctx)
    assert first[0].files != yolo.files
    assert yolo.files["labels/1__a.txt"] == b"1 0.55 0.55 0.1 0.1\n"
    assert b'"category_id":1' in coco.fragment


# -- convert ---------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_convert_reads_json_jsonl_and_a_folder_alike(tmp_path):
    export = json.loads((FIXTURES / "exports" / "project-1-JSON.json").read_text())
    jsonl = tmp_path / "tasks.jsonl"
    jsonl.write_text("".join(json.dumps(t) + "\n" for t in export))
    folder = tmp_path / "tasks"
    folder.mkdir()
    for t in export:
        (folder / f"{t['id']}.json").write_bytes(orjson.dumps(t, option=orjson.OPT_INDENT_2))
    outputs = []
    for n, source in enumerate([FIXTURES / "exports" / "project-1-JSON.json", jsonl, folder]):
        out = tmp_path / f"out{n}"
        convert(source, "MANIFEST", out, context(CONFIG, None))
        outputs.append(_tree(out))
    assert outputs[0] == outputs[1] == outputs[2]
    lines = outputs[0]["manifest.jsonl"].decode().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == [1, 3]


def test_convert_accepts_legacy_completions(tmp_path):
    source = tmp_path / "legacy.json"
    source.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "data": {"image": "a.jpg"},
                    "completions": [{"id": 1, "result": [rect(0, 0, 50, 50, "Car")]}],
                }
            ]
        )
    )
    convert(source, "YOLO", tmp_path / "out", context(CONFIG, None))
    assert (tmp_path / "out/labels/1__a.txt").read_text() == "1 0.25 0.25 0.5 0.5\n"


def test_convert_infers_classes_without_a_config(tmp_path):
    source = tmp_path / "t.json"
    source.write_text(
        json.dumps([task(2, [rect(0, 0, 1, 1, "Zebra")]), task(1, [rect(0, 0, 1, 1, "Ant")])])
    )
    convert(source, "YOLO", tmp_path / "out", context(None, None))
    assert (tmp_path / "out/classes.txt").read_text() == "Zebra\nAnt\n"  # first seen first


def test_convert_aggregates_in_id_order_and_a_repeated_task_counts_once(tmp_path):
    source = tmp_path / "t.json"
    tasks = [task(3, [rect(0, 0, 1, 1, "Car")]), task(1, [rect(0, 0, 1, 1, "Car")])]
    tasks += [task(2, [rect(0, 0, 1, 1, "Car")]), task(1, [])]  # task 1 again, now unlabelled
    source.write_text(json.dumps(tasks))
    summary = convert(source, "COCO", tmp_path / "out", context(CONFIG, None))
    coco = json.loads((tmp_path / "out/result.json").read_text())
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]
    assert sorted(a["image_id"] for a in coco["annotations"]) == [2, 3]  # the later task 1
    assert summary.tasks == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not a JSON list of tasks"),
        (b'[{"id": "x"}]', "task #0: id"),
        (b'[{"id": 1, "data": {}}, 5]', "task #1"),
        (b'[{"id": 1, "image": "a.jpg", "label": []}]', "no `data` object"),
    ],
)
def test_convert_bad_input_is_one_line_and_leaves_no_output(tmp_path, content, message):
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    with pytest.raises(ConvertError) as err:
        convert(source, "YOLO", tmp_path / "out", context(CONFIG, None))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_convert_cli_refuses_a_non_empty_output_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    command = [
        sys.executable,
        "-m",
        "sync.cli",
        "convert",
        str(FIXTURES / "exports" / "project-1-JSON.json"),
        "-f",
        "coco",
        "-o",
        str(out),
        "-c",
        str(CONFIG),
    ]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"annosync: {out} exists and is not empty (use --overwrite to replace it)"
    ]
    assert (out / "keep.txt").exists()
    done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 tasks converted to COCO" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]


def test_polygon_area_is_the_shoelace_area(ctx):
    t = task(1, [poly([[0, 0], [50, 0], [50, 50], [0, 50]], "Car", width=200, height=100)])
    annotation = coco_of(t, ctx)["annotations"][0]
    assert annotation["area"] == pytest.approx(100 * 50)
    assert annotation["segmentation"] == [[0, 0, 100, 0, 100, 50, 0, 50]]
    assert math.isclose(annotation["bbox"][2], 100)


# -- consumers' rules: pycocotools loads the COCO file, Ultralytics finds every label ----


def test_coco_loads_with_pycocotools(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco", reason="pycocotools (test extra)")
    convert(
        FIXTURES / "exports" / "project-1-JSON.json", "COCO", tmp_path / "c", context(CONFIG, None)
    )
    coco = coco_api.COCO(str(tmp_path / "c" / "result.json"))
    assert sorted(coco.getImgIds()) == [1, 3]
    assert len(coco.getAnnIds(imgIds=[1])) == 2
    polygon = next(a for a in coco.loadAnns(coco.getAnnIds()) if a["segmentation"])
    assert coco.annToMask(polygon).sum() > 0


def _ultralytics_label_path(image: str) -> str:
    """Ultralytics' rule (ultralytics/data/utils.py img2label_paths): the last /images/
    becomes /labels/ and the extension .txt."""
    head, _, tail = image.rpartition("/images/")
    return f"{head}/labels/{tail}".rsplit(".", 1)[0] + ".txt"


def test_yolo_layout_is_one_ultralytics_accepts(tmp_path):
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "dataset"
    convert(FIXTURES / "exports" / "project-1-JSON.json", "YOLO", out, context(CONFIG, None))
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert "path" not in data  # `path: .` would be the trainer's working directory
    assert data["nc"] == len(data["names"]) == 3
    assert data["names"] == {0: "Airplane", 1: "Car", 2: "Truck"}
    images = []
    for split in ("train", "val", "test"):
        listing = (out / data[split]).read_text().splitlines()  # no path: the yaml's folder
        images += [str(out) + "/" + line.removeprefix("./") for line in listing]
    assert len(images) == 2  # every task in exactly one split
    for image in images:
        label = Path(_ultralytics_label_path(image))
        assert label.exists(), label
        for line in label.read_text().splitlines():
            cls, *values = line.split()
            assert 0 <= int(cls) < data["nc"]
            assert len(values) == 4 or (len(values) % 2 == 0 and len(values) >= 6)
            assert all(0.0 <= float(v) <= 1.0 for v in values)


def test_coco_keypoints_where_the_config_has_them():
    xml = """<View><Image name="img" value="$image"/>
      <KeyPointLabels name="kp" toName="img"><Label value="Nose"/></KeyPointLabels></View>"""
    parsed = parse_label_config(xml)
    ctx = ExportContext(1, config_classes(parsed), "image", keypoint_labels=["Nose"])
    point = {
        "id": "k",
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "img",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": 50, "y": 25, "width": 1, "keypointlabels": ["Nose"]},
    }
    exporter = get_exporter("COCO")
    fragment = exporter.render_task(task(4, [point]), b"{}", ctx).fragment
    result = orjson.loads(exporter.aggregate([fragment], ctx)["result.json"])
    assert result["categories"] == [
        {"id": 0, "name": "Nose", "keypoints": ["point"], "skeleton": []}
    ]
    assert result["annotations"][0]["keypoints"] == [100.0, 25.0, 2]
    assert result["annotations"][0]["num_keypoints"] == 1
