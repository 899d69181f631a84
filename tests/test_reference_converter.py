"""annosync's YOLO and COCO against label-studio-sdk's converter (the batch anchor).

Same images, same boxes and polygons per class *name*, within 1e-6 (normalised) or 1e-3
pixels, on the captured fixture export and on a generated corpus. Where SPEC section 5
deliberately differs, the corpus avoids the case and ``DELIBERATE`` names it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import FIXTURES

from sync.convert import context, convert

converter = pytest.importorskip(
    "label_studio_sdk.converter", reason="label-studio-sdk is not installed (test extra)"
)

DELIBERATE = {
    "class_ids": "config order of region tags, category= honoured; Choices are not classes "
    "(converter: alphabetical over every tag, Choices included)",
    "stems": "'<task id>__<sanitised basename>' (converter: '<md5 prefix>__<basename>', "
    "which collides for equal basenames)",
    "which_annotation": "the newest non-cancelled annotation, ground truth first (converter: "
    "the oldest in YOLO, every annotation in COCO)",
    "rotation": "rotated boxes become their enclosing box computed in pixels (converter: "
    "rotation ignored in YOLO, enclosing box computed in percent space in COCO)",
    "coco_ids": "image id = task id, annotation ids stable per region (converter: positions)",
    "coco_images": "one image entry per task (converter: one per annotation)",
    "coco_info": "no wall-clock date_created (converter: now)",
}
CONFIG = FIXTURES / "configs" / "image-od-v2.xml"
LABELS = ["Airplane", "Car", "Truck"]


def _corpus(n: int, seed: int = 7) -> list[dict]:
    """Tasks with one annotation each (or none), unrotated boxes and polygons, varied and
    non-square image sizes, unique basenames."""
    rng = random.Random(seed)
    tasks = []
    for task_id in range(1, n + 1):
        width, height = rng.choice([(1280, 720), (640, 480), (333, 1000), (1024, 1024)])
        results = []
        for k in range(rng.randint(0, 4)):
            label = rng.choice(LABELS)
            if rng.random() < 0.6:
                x, y = rng.uniform(0, 70), rng.uniform(0, 70)
                results.append(
                    {
                        "id": f"r{k}",
                        "type": "rectanglelabels",
                        "from_name": "bbox",
                        "to_name": "image",
                        "original_width": width,
                        "original_height": height,
                        "image_rotation": 0,
                        "value": {
                            "x": x,
                            "y": y,
                            "width": rng.uniform(1, 30),
                            "height": rng.uniform(1, 30),
                            "rotation": 0,
                            "rectanglelabels": [label],
                        },
                    }
                )
            else:
                points = [[rng.uniform(0, 100), rng.uniform(0, 100)] for _ in range(5)]
                results.append(
                    {
                        "id": f"p{k}",
                        "type": "polygonlabels",
                        "from_name": "poly",
                        "to_name": "image",
                        "original_width": width,
                        "original_height": height,
                        "image_rotation": 0,
                        "value": {"points": points, "closed": True, "polygonlabels": [label]},
                    }
                )
        annotations = (
            [
                {
                    "id": task_id,
                    "result": results,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-11-21T00:00:00Z",
                    "updated_at": "2026-11-21T00:00:00Z",
                }
            ]
            if results
            else []
        )
        tasks.append(
            {
                "id": task_id,
                "data": {"image": f"http://h/images/img_{task_id}.jpg"},
                "annotations": annotations,
                "predictions": [],
            }
        )
    return tasks


def _theirs(fmt: str, source: Path, out: Path) -> Path:
    c = converter.Converter(config=CONFIG.read_text(), project_dir=None, download_resources=False)
    getattr(c, f"convert_to_{fmt}")(input_data=str(source), output_dir=str(out), is_dir=False)
    return out


def _yolo_by_task(folder: Path) -> dict[int, list]:
    classes = (folder / "classes.txt").read_text().splitlines()
    found: dict[int, list] = {}
    for file in (folder / "labels").glob("*.txt"):
        task_id = int(re.search(r"(\d+)\.txt$", file.name).group(1))
        lines = [line.split() for line in file.read_text().splitlines() if line.strip()]
        found[task_id] = sorted((classes[int(c)], [float(v) for v in vals]) for c, *vals in lines)
    return found


def _compare_yolo(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for task_id in ours:
        assert len(ours[task_id]) == len(theirs[task_id]), task_id
        for (name_a, a), (name_b, b) in zip(ours[task_id], theirs[task_id], strict=True):
            assert name_a == name_b
            assert a == pytest.approx(b, abs=1e-6), task_id


def _coco_by_image(doc: dict) -> dict[str, list]:
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {i["id"]: re.search(r"(\d+)\.jpg$", i["file_name"]).group(1) for i in doc["images"]}
    found: dict[str, list] = {}
    for a in doc["annotations"]:
        found.setdefault(files[a["image_id"]], []).append(
            (names[a["category_id"]], a["bbox"], (a.get("segmentation") or [[]])[0], a["area"])
        )
    return {k: sorted(v, key=lambda item: (item[0], item[1])) for k, v in found.items()}


def _compare_coco(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for image, regions in ours.items():
        assert len(regions) == len(theirs[image])
        for (n1, b1, s1, a1), (n2, b2, s2, a2) in zip(regions, theirs[image], strict=True):
            assert n1 == n2
            assert b1 == pytest.approx(b2, abs=1e-3)
            assert s1 == pytest.approx(s2, abs=1e-3)
            assert a1 == pytest.approx(a2, rel=1e-6, abs=1e-3)


@pytest.mark.parametrize("source", ["fixture", "corpus"])
def test_yolo_and_coco_match_the_reference_converter(tmp_path, source):
    if source == "fixture":
        path = FIXTURES / "exports" / "project-1-JSON.json"
    else:
        path = tmp_path / "corpus.json"
        path.write_text(json.dumps(_corpus(200)))
    convert(path, "YOLO", tmp_path / "ours-yolo", context(CONFIG, None))
    _compare_yolo(
        _yolo_by_task(tmp_path / "ours-yolo"),
        _yolo_by_task(_theirs("yolo", path, tmp_path / "theirs-yolo")),
    )
    convert(path, "COCO", tmp_path / "ours-coco", context(CONFIG, None))
    _theirs("coco", path, tmp_path / "theirs-coco")
    ours = json.loads((tmp_path / "ours-coco" / "result.json").read_text())
    theirs = json.loads((tmp_path / "theirs-coco" / "result.json").read_text())
    _compare_coco(_coco_by_image(ours), _coco_by_image(theirs))


def test_deliberate_differences_show(tmp_path):
    """Each deliberate difference really is one (so the list above stays honest)."""
    path = FIXTURES / "exports" / "project-1-JSON.json"
    convert(path, "YOLO", tmp_path / "ours", context(CONFIG, None))
    theirs = _theirs("yolo", path, tmp_path / "theirs")
    assert "Airport" in (theirs / "classes.txt").read_text()  # class_ids
    assert "Airport" not in (tmp_path / "ours" / "classes.txt").read_text()
    assert {p.name for p in (theirs / "labels").iterdir()}.isdisjoint(
        p.name for p in (tmp_path / "ours" / "labels").iterdir()
    )  # stems
    assert set(DELIBERATE) >= {"class_ids", "stems", "which_annotation", "rotation"}
