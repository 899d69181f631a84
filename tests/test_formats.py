"""The other formats: against Label Studio's exports, the seed documents' examples, readers
(XML, PNG, .npy, CoNLL), and the label-config capabilities."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from functools import partial
from pathlib import Path

import orjson
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exports import rect

from sync.convert import ConvertError, context, convert
from sync.exporters import ExportContext, exporter_names, get_exporter, rle
from sync.exporters.capabilities import list_formats, unfit_reason
from sync.exporters.classes import context_from_config
from sync.exporters.conll import spans, tokens
from sync.exporters.files import split_of
from sync.labelconfig import parse_label_config

EXPORTS = FIXTURES / "exports"
CONFIGS = FIXTURES / "configs"
GCP_USE = {"train": "TRAIN", "val": "VALIDATION", "test": "TEST"}


def _convert(tmp_path: Path, export: str, fmt: str, config: str) -> Path:
    out = tmp_path / fmt
    convert(EXPORTS / export, fmt, out, context(CONFIGS / config, None), overwrite=True)
    return out


def _ctx(config_xml: str | None) -> ExportContext:
    parsed = parse_label_config(config_xml) if config_xml else None
    return context_from_config(1, [], parsed)


def _render(fmt: str, tasks: list[dict], config_xml: str | None = None) -> dict[str, bytes]:
    exporter, ctx = get_exporter(fmt), _ctx(config_xml)
    files, fragments = {}, []
    for task in tasks:
        out = exporter.render_task(task, orjson.dumps(task), ctx)
        files.update(out.files)
        fragments.append(out.fragment)
    return {**files, **exporter.aggregate(iter(fragments), ctx)}


def _task(task_id: int, results: list, data: dict | None = None, **annotation) -> dict:
    ann = {"id": task_id * 10, "completed_by": 7, "result": results, "was_cancelled": False}
    ann.update(created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
    return {
        "id": task_id,
        "data": data or {"image": "gs://b/image.png"},
        "annotations": [ann | annotation],
    }


_box = partial(rect, width=1000, height=500, rid="b")  # a box on a 1000 x 500 image


IMAGE_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="bbox" toName="image">
  <Label value="tulip"/><Label value="Car"/></RectangleLabels>
<PolygonLabels name="poly" toName="image"><Label value="tulip"/></PolygonLabels>
<Choices name="kind" toName="image" choice="multiple">
  <Choice value="flower"/><Choice value="tulip"/></Choices>
</View>"""
TEXT_CONFIG = """<View><Text name="text" value="$text"/>
<Labels name="label" toName="text"><Label value="equations"/></Labels>
<Choices name="topic" toName="text"><Choice value="news"/></Choices></View>"""


# --- Label Studio's own exports ------------------------------------------------------------


def test_csv_is_byte_identical_to_label_studio(tmp_path):
    out = _convert(tmp_path, "project-1-JSON.json", "CSV", "image-od-v2.xml")
    assert (out / "result.csv").read_bytes() == (EXPORTS / "project-1-CSV.csv").read_bytes()


def test_tsv_has_the_csv_rows_tab_separated(tmp_path):
    out = _convert(tmp_path, "project-1-JSON.json", "TSV", "image-od-v2.xml")
    assert [p.name for p in out.iterdir()] == ["result.tsv"]
    tsv = list(csv.reader(io.StringIO((out / "result.tsv").read_text()), delimiter="\t"))
    expected = list(csv.reader(io.StringIO((EXPORTS / "project-1-CSV.csv").read_text())))
    assert tsv == expected and "\t" in (out / "result.tsv").read_text().splitlines()[0]


def test_json_min_equals_label_studio(tmp_path):
    out = _convert(tmp_path, "project-1-JSON.json", "JSON_MIN", "image-od-v2.xml")
    got = orjson.loads((out / "result.json").read_bytes())
    assert got == orjson.loads((EXPORTS / "project-1-JSON_MIN.json").read_bytes())


def test_json_is_the_full_task_list(tmp_path):
    out = _convert(tmp_path, "project-2-JSON.json", "JSON", "text-ner.xml")
    source = orjson.loads((EXPORTS / "project-2-JSON.json").read_bytes())
    assert orjson.loads((out / "result.json").read_bytes()) == sorted(source, key=lambda t: t["id"])


def test_json_min_matches_the_seed_example():
    seed = {"height": 10.458911419423693, "rectanglelabels": ["Moonwalker"], "rotation": 0}
    seed |= {"width": 12.4, "x": 50.8, "y": 5.869797225186766}
    image = "https://htx-misc.s3.amazonaws.com/opensource/label-studio/examples/images/x.jpg"
    result = {"from_name": "tag", "id": "Dx_aB91ISN", "to_name": "img", "type": "rectanglelabels"}
    task = {
        "id": 1,
        "data": {"image": image},
        "completions": [{"id": 1001, "result": [result | {"value": seed}]}],
    }
    [record] = orjson.loads(_render("JSON_MIN", [task])["result.json"])
    assert record["image"] == image and record["tag"] == [seed]


# --- CoNLL 2003 ----------------------------------------------------------------------------


def _blocks(conll: str) -> list[list[tuple[str, str]]]:
    lines = conll.split("\n")
    assert lines[0] == "-DOCSTART- -X- O O"
    blocks, current = [], []
    for line in lines[1:]:
        if not line:
            if current:
                blocks.append(current)
            current = []
            continue
        token, x, blank, tag = line.split(" ")
        assert (x, blank) == ("-X-", "_")
        current.append((token, tag))
    return blocks


def test_conll_lines_reconstruct_the_labelled_spans(tmp_path):
    out = _convert(tmp_path, "project-2-JSON.json", "CONLL2003", "text-ner.xml")
    tasks = sorted(
        orjson.loads((EXPORTS / "project-2-JSON.json").read_bytes()), key=lambda t: t["id"]
    )
    blocks = _blocks((out / "result.conll").read_text())
    labelled = [t for t in tasks if tokens(t["data"]["text"])]
    assert len(blocks) == len(labelled)
    for task, block in zip(labelled, blocks, strict=True):
        toks = tokens(task["data"]["text"])
        assert [t for t, _ in block] == [t for t, _, _ in toks]
        rebuilt, open_span = [], None
        for (_, start, end), (_, tag) in zip(toks, block, strict=True):
            if tag.startswith("B-"):
                open_span = [start, end, tag[2:]]
                rebuilt.append(open_span)
            elif tag.startswith("I-"):
                open_span[1] = end
        assert [tuple(s) for s in rebuilt] == spans(task)
    assert sum(len(s) for s in map(spans, labelled)) >= 3  # not vacuous


def test_conll_a_span_that_cuts_a_token_tags_the_whole_token():
    text = "New-York-based firms"
    label = {"start": 4, "end": 8, "labels": ["LOC"], "text": "York"}
    task = _task(1, [{"type": "labels", "from_name": "label", "value": label}], {"text": text})
    conll = _render("CONLL2003", [task], TEXT_CONFIG)["result.conll"].decode()
    assert _blocks(conll) == [[("New-York-based", "B-LOC"), ("firms", "O")]]


# --- VOC, YOLO_OBB -------------------------------------------------------------------------


def test_voc_xml_parses_with_pixel_boxes(tmp_path):
    task = _task(3, [_box(10, 20, 30, 40, "Car"), _box(50, 50, 10, 10, "tulip", rid="c")])
    files = _render("VOC", [task], IMAGE_CONFIG)
    root = ET.fromstring(files["Annotations/3__image.xml"])
    assert root.findtext("filename") == "3__image.png"
    assert (root.findtext("size/width"), root.findtext("size/height")) == ("1000", "500")
    boxes = [
        (
            o.findtext("name"),
            *(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.iter("object")
    ]
    assert boxes == [("Car", 101, 101, 400, 300), ("tulip", 501, 251, 600, 300)]
    assert files["classes.txt"] == b"tulip\nCar\n"


def test_yolo_obb_rotates_in_pixel_space_on_a_non_square_image():
    task = _task(1, [_box(50, 50, 10, 10, "Car", rotation=90)])  # 100 x 50 px box, 1000 x 500
    line = _render("YOLO_OBB", [task], IMAGE_CONFIG)["labels/1__image.txt"].decode().split()
    assert line[0] == "1"
    corners = [float(v) for v in line[1:]]
    # top-left stays; rotating 90° clockwise sends +x to +y: 100 px wide becomes 100 px tall
    assert corners == pytest.approx([0.5, 0.5, 0.5, 0.7, 0.45, 0.7, 0.45, 0.5])


def test_yolo_obb_keeps_unrotated_boxes():
    task = _task(1, [_box(10, 10, 20, 20, "tulip")])
    body = _render("YOLO_OBB", [task], IMAGE_CONFIG)["labels/1__image.txt"].decode()
    assert body == "0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n"


# --- brush masks ---------------------------------------------------------------------------


def _mask(width: int, height: int) -> bytes:
    return bytes(
        255 if (x - 6) ** 2 + (y - 4) ** 2 < 12 else 0 for y in range(height) for x in range(width)
    )


def test_brush_rle_round_trip_matches_the_sdk_encoder():
    np = pytest.importorskip("numpy")
    from label_studio_sdk.converter.brush import decode_rle, encode_rle

    width, height = 13, 9
    rgba = bytes(v for a in _mask(width, height) for v in (0, 0, 0, a))
    sdk = encode_rle(np.frombuffer(rgba, dtype=np.uint8))
    assert rle.encode(rgba) == sdk  # bit for bit
    assert rle.decode(sdk) == rgba
    assert bytes(decode_rle(bytes(rle.encode(rgba)))) == rgba


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    rows = [raw[r * (width + 1) + 1 : (r + 1) * (width + 1)] for r in range(height)]
    return width, height, b"".join(rows)


@pytest.mark.parametrize("fmt", ["BRUSH_TO_PNG", "BRUSH_TO_NUMPY"])
def test_brush_masks_decode_to_the_painted_pixels(fmt):
    np = pytest.importorskip("numpy")
    width, height = 13, 9
    mask = _mask(width, height)
    value = {"format": "rle", "rle": rle.encode(bytes(v for a in mask for v in (9, 9, 9, a)))}
    result = {"id": "m1", "type": "brushlabels", "from_name": "brush", "original_width": width}
    result |= {"original_height": height, "value": value | {"brushlabels": ["road/side"]}}
    files = _render(fmt, [_task(2, [result])])
    name = "masks/2__image/0_road_side" + (".png" if fmt == "BRUSH_TO_PNG" else ".npy")
    if fmt == "BRUSH_TO_PNG":
        assert _png_pixels(files[name]) == (width, height, mask)
    else:
        array = np.load(io.BytesIO(files[name]))
        assert array.shape == (height, width) and array.tobytes() == mask
    index = orjson.loads(files["masks.json"])
    assert index == [{"task": 2, "region": "m1", "label": "road/side", "file": name}]


def test_a_broken_rle_is_reported_not_fatal():
    value = {"format": "rle", "rle": [0, 0, 1], "brushlabels": ["x"]}
    result = {
        "id": "m",
        "type": "brushlabels",
        "original_width": 2,
        "original_height": 2,
        "value": value,
    }
    files = _render("BRUSH_TO_PNG", [_task(1, [result])])
    assert [k for k in files if k.startswith("masks/")] == []  # no half-decoded mask
    assert "error" in orjson.loads(files["masks.json"])[0]


# --- ASR -----------------------------------------------------------------------------------


def test_asr_manifest_takes_the_duration_from_the_task_never_the_audio(tmp_path):
    tasks = orjson.loads((EXPORTS / "project-3-JSON.json").read_bytes())
    tasks[0]["data"]["duration"] = 2.5
    source = tmp_path / "in.json"
    source.write_bytes(orjson.dumps(tasks))
    out = tmp_path / "asr"
    convert(source, "ASR_MANIFEST", out, context(CONFIGS / "audio-transcription.xml", None))
    lines = [orjson.loads(line) for line in (out / "manifest.json").read_text().splitlines()]
    assert lines[0] == {
        "audio_filepath": "http://127.0.0.1:9099/audio/1.wav",
        "duration": 2.5,
        "text": "hello world, this is a test recording",
    }
    missing = (out / "manifest_missing_duration.json").read_text().splitlines()
    assert len(lines) + len(missing) == sum(bool(t.get("annotations")) for t in tasks)


# --- Google Data Labeling Service (seed 004) -----------------------------------------------


def _poly(points, label):
    value = {"points": points, "polygonlabels": [label]}
    return {
        "id": "p",
        "type": "polygonlabels",
        "from_name": "poly",
        "original_width": 1000,
        "original_height": 500,
        "value": value,
    }


def test_gcp_csv_lines_are_the_seed_lines():
    choice = {"type": "choices", "from_name": "kind", "value": {"choices": ["flower", "tulip"]}}
    task = _task(
        1, [choice, _box(10, 10, 20, 20, "tulip"), _poly([[10, 10], [30, 30], [60, 60]], "tulip")]
    )
    lines = _render("GCP_CSV", [task], IMAGE_CONFIG)["export.csv"].decode().splitlines()
    use = GCP_USE[split_of(1)]
    assert lines == [
        f"{use},gs://b/image.png,flower,tulip",
        f"{use},gs://b/image.png,tulip,0.1,0.1,,,0.3,0.3,,",
        f"{use},gs://b/image.png,tulip,0.1,0.1,,,0.3,0.3,,,0.6,0.6,,",
    ]


def test_gcp_jsonl_matches_the_seed_examples():
    task = _task(1, [_box(10, 20, 80, 70, "tulip")])
    [line] = _render("GCP_JSONL", [task], IMAGE_CONFIG)["export.jsonl"].decode().splitlines()
    example = orjson.loads(line)
    assert example["imagePayload"] == {"mimeType": "IMAGE_PNG", "imageUri": "gs://b/image.png"}
    value = example["annotations"][0]["annotationValue"]["imageBoundingPolyAnnotation"]
    assert value == {
        "annotationSpec": {"displayName": "tulip"},
        "normalizedBoundingPoly": {
            "normalizedVertices": [{"x": 0.1, "y": 0.2}, {"x": 0.9, "y": 0.9}]
        },
    }
    label = {"start": 10, "end": 20, "labels": ["equations"]}
    text_task = _task(
        2,
        [{"type": "labels", "value": label}, {"type": "choices", "value": {"choices": ["news"]}}],
        {"text": "dummy_text_content"},
    )
    example = orjson.loads(_render("GCP_JSONL", [text_task], TEXT_CONFIG)["export.jsonl"])
    assert example["textPayload"] == {"textContent": "dummy_text_content", "wordCount": 1}
    values = [a["annotationValue"] for a in example["annotations"]]
    assert values == [
        {"textClassificationAnnotation": {"annotationSpec": {"displayName": "news"}}},
        {
            "textEntityExtractionAnnotation": {
                "annotationSpec": {"displayName": "equations"},
                "textSegment": {"startOffset": 10, "endOffset": 20},
            }
        },
    ]


# --- DataGym (seed 003) --------------------------------------------------------------------


def test_datagym_export_has_classes_then_one_object_per_task():
    region_choice = {
        "id": "b",
        "type": "choices",
        "from_name": "kind",
        "value": {"choices": ["tulip"]},
    }
    scene = {"id": "g", "type": "choices", "from_name": "kind", "value": {"choices": ["flower"]}}
    task = _task(
        1,
        [
            _box(10, 20, 30, 40, "Car"),
            region_choice,
            scene,
            _poly([[10, 10], [20, 10], [20, 20]], "tulip"),
        ],
    )
    waiting = {"id": 2, "data": {"image": "http://x/a%20b.jpg?sig=1"}, "annotations": []}
    doc = orjson.loads(_render("DATAGYM", [task, waiting], IMAGE_CONFIG)["export.json"])
    assert doc[0] == {
        "label_classes": [
            {"class_name": "tulip_rectangle", "geometry_type": "rectangle"},
            {"class_name": "tulip_polygon", "geometry_type": "polygon"},
            {"class_name": "Car", "geometry_type": "rectangle"},
            {"class_name": "kind", "classification_type": "checklist"},
        ]
    }
    first = doc[1]
    assert (first["internal_media_ID"], first["external_media_ID"]) == ("1", "image.png")
    assert (first["labeler"], first["status"]) == (7, "completed")
    assert first["global_classifications"] == {"kind": ["flower"]}
    assert first["labels"]["Car"] == [
        {
            "rectangle": [{"x": 100, "y": 100, "w": 300, "h": 200}],
            "classifications": {"kind": ["tulip"]},
            "nested_geometries": {},
        }
    ]
    assert first["labels"]["tulip_polygon"][0]["polygon"] == [
        {"x": 100, "y": 50},
        {"x": 200, "y": 50},
        {"x": 200, "y": 100},
    ]
    assert (doc[2]["external_media_ID"], doc[2]["status"], doc[2]["labels"]) == (
        "a b.jpg",
        "waiting",
        {},
    )


# --- capabilities --------------------------------------------------------------------------


def _enabled(config_file: str) -> set[str]:
    parsed = parse_label_config((CONFIGS / config_file).read_text())
    return {f["name"] for f in list_formats(parsed) if not f["disabled"]}


def test_formats_offered_by_label_config_like_label_studio():
    common = {"JSON", "JSON_MIN", "CSV", "TSV", "MANIFEST"}
    assert _enabled("image-od-v2.xml") == common | {
        "COCO",
        "YOLO",
        "YOLO_OBB",
        "VOC",
        "GCP_CSV",
        "GCP_JSONL",
        "DATAGYM",
        "YOLO_WITH_IMAGES",
        "YOLO_OBB_WITH_IMAGES",
        "COCO_WITH_IMAGES",
    }
    assert _enabled("text-ner.xml") == common | {"CONLL2003", "GCP_JSONL"}
    assert _enabled("audio-transcription.xml") == common | {"ASR_MANIFEST"}
    brush = (
        '<View><Image name="i" value="$i"/>'
        '<BrushLabels name="b" toName="i"><Label value="x"/></BrushLabels></View>'
    )
    assert {"BRUSH_TO_PNG", "BRUSH_TO_NUMPY", "BRUSH_TO_COCO"} <= {
        f["name"] for f in list_formats(parse_label_config(brush)) if not f["disabled"]
    }


def test_a_format_that_does_not_fit_is_refused_never_an_empty_file(tmp_path):
    with pytest.raises(ConvertError, match="YOLO needs PolygonLabels or RectangleLabels on Image"):
        _convert(tmp_path, "project-2-JSON.json", "YOLO", "text-ner.xml")
    assert not (tmp_path / "YOLO").exists()
    parsed = parse_label_config((CONFIGS / "text-ner.xml").read_text())
    assert unfit_reason(get_exporter("CONLL2003"), parsed) is None


def test_cli_lists_formats_and_exits_2_on_a_misfit(tmp_path):
    command = [sys.executable, "-m", "sync.cli", "convert"]
    listed = subprocess.run(
        [*command, "--list-formats", "-c", str(CONFIGS / "text-ner.xml")],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0
    rows = dict(line.split(None, 1) for line in listed.stdout.splitlines())
    assert rows["CONLL2003"].startswith("CoNLL") and rows["VOC"].startswith("disabled: VOC needs")
    refused = subprocess.run(
        [
            *command,
            str(EXPORTS / "project-2-JSON.json"),
            "-f",
            "VOC",
            "-c",
            str(CONFIGS / "text-ner.xml"),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert (
        refused.stderr.count("\n") == 1 and "VOC needs RectangleLabels on Image" in refused.stderr
    )


# --- hostile results never break an export -----------------------------------------------

_RESULT_TYPES = ["rectanglelabels", "polygonlabels", "polylinelabels", "keypointlabels"]
_RESULT_TYPES += ["brushlabels", "labels", "choices", "textarea", "rating", "x"]
_VALUE_KEYS = ["x", "y", "width", "height", "rotation", "points", "start", "end", "text"]
_VALUE_KEYS += ["labels", "choices", "rectanglelabels", "polygonlabels", "brushlabels", "rle"]
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=8)
)
_json = st.recursive(
    _leaf,
    lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=12), c, max_size=5)
    ),
    max_leaves=12,
)
_value = st.one_of(
    _json,
    st.fixed_dictionaries(
        {}, optional={key: _json for key in _VALUE_KEYS} | {"format": st.just("rle")}
    ),
)
_result = st.fixed_dictionaries(
    {"type": st.sampled_from(_RESULT_TYPES), "value": _value},
    optional={
        "id": _json,
        "from_name": st.sampled_from(["bbox", "label", "kind", "brush", "t"]),
        "original_width": st.one_of(_json, st.integers(1, 40)),
        "original_height": st.one_of(_json, st.integers(1, 40)),
    },
)
_data_keys = st.sampled_from(["image", "text", "audio", "duration"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    results=st.lists(_result, max_size=4),
    data=st.dictionaries(
        st.sampled_from(["image", "text", "audio", "duration"]), _json, max_size=3
    ),
    annotation=st.fixed_dictionaries({}, optional={"completed_by": _json, "created_at": _json}),
)
def test_every_format_survives_hostile_results(results, data, annotation):
    task = {"id": 5, "data": data, "annotations": [{"id": 1, "result": results, **annotation}]}
    for fmt in exporter_names():
        for config in (IMAGE_CONFIG, TEXT_CONFIG, None):
            _render(fmt, [task], config)  # raising here is the failure
