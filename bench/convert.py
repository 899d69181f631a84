"""Full conversion of generated projects: annosync convert vs label-studio-sdk's converter.

Side by side in one run, each in its own process: wall time, CPU time and peak RSS of that
process, each the median of 3 runs.
Usage: .venv/bin/python bench/convert.py [--tasks 10000 100000] [--formats YOLO COCO]
       .venv/bin/python bench/convert.py --all-formats --tasks 10000 --no-sdk
(--all-formats: every format on a project it fits: image, text NER, audio, brush masks)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import random_rect  # noqa: E402

CONFIG = ROOT / "tests/fixtures/label-studio/configs/image-od-v2.xml"
LABELS = ["Airplane", "Car", "Truck"]

TEXT_CONFIG = ROOT / "tests/fixtures/label-studio/configs/text-ner.xml"
AUDIO_CONFIG = ROOT / "tests/fixtures/label-studio/configs/audio-transcription.xml"
BRUSH_CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="brush" toName="image"><Label value="Road"/><Label value="Sky"/></BrushLabels>
</View>"""
IMAGE_FORMATS = ["YOLO", "COCO", "VOC", "YOLO_OBB", "JSON", "JSON_MIN", "CSV", "TSV"]
IMAGE_FORMATS += ["GCP_CSV", "GCP_JSONL", "DATAGYM", "MANIFEST"]
WORDS = [
    "Alice",
    "Smith",
    "joined",
    "Acme",
    "Corp",
    "in",
    "Berlin",
    "last",
    "May",
    "and",
    "met",
    "Bob",
    "Jones",
]

SDK = """
import sys
from label_studio_sdk.converter import Converter
c = Converter(config=open(sys.argv[1]).read(), project_dir=None, download_resources=False)
getattr(c, "convert_to_" + sys.argv[2])(input_data=sys.argv[3], output_dir=sys.argv[4],
                                        is_dir=False)
"""


def corpus(path: Path, n: int, seed: int = 1) -> None:
    """A Label Studio JSON export of ``n`` image tasks, 1-4 regions each, written streaming."""
    rng = random.Random(seed)
    with path.open("w") as out:
        out.write("[")
        for task_id in range(1, n + 1):
            results = []
            for k in range(rng.randint(1, 4)):
                label = rng.choice(LABELS)
                if k % 3 == 2:
                    results.append(
                        {
                            "id": f"p{k}",
                            "type": "polygonlabels",
                            "from_name": "poly",
                            "to_name": "image",
                            "original_width": 1280,
                            "original_height": 720,
                            "value": {
                                "points": [
                                    [rng.uniform(0, 100), rng.uniform(0, 100)] for _ in range(6)
                                ],
                                "polygonlabels": [label],
                            },
                        }
                    )
                else:
                    results.append(random_rect(rng, label, k))
            task = {
                "id": task_id,
                "data": {"image": f"s3://bucket/images/{task_id}.jpg"},
                "annotations": [
                    {
                        "id": task_id,
                        "result": results,
                        "was_cancelled": False,
                        "ground_truth": False,
                        "created_at": "2026-11-21T00:00:00Z",
                        "updated_at": "2026-11-21T00:00:00Z",
                    }
                ],
                "predictions": [],
                "meta": {},
                "created_at": "2026-11-21T00:00:00Z",
                "updated_at": "2026-11-21T00:00:00Z",
                "project": 1,
            }
            out.write(("," if task_id > 1 else "") + json.dumps(task))
        out.write("]")


def _task(task_id: int, data: dict, results: list) -> dict:
    annotation = {"id": task_id, "result": results, "was_cancelled": False, "completed_by": 1}
    annotation.update(created_at="2026-11-21T00:00:00Z", updated_at="2026-11-21T00:00:00Z")
    return {"id": task_id, "data": data, "annotations": [annotation], "project": 1}


def _stream(path: Path, tasks) -> None:
    with path.open("w") as out:
        out.write("[")
        for n, task in enumerate(tasks):
            out.write(("," if n else "") + json.dumps(task))
        out.write("]")


def text_corpus(path: Path, n: int, seed: int = 2) -> None:
    """``n`` NER tasks: 12-word sentences with two or three labelled spans."""
    rng = random.Random(seed)

    def task(task_id: int) -> dict:
        words = [rng.choice(WORDS) for _ in range(12)]
        text, results, at = " ".join(words), [], 0
        for k, word in enumerate(words):
            if k % 4 == 0:
                value = {"start": at, "end": at + len(word), "text": word}
                value["labels"] = [rng.choice(["PER", "ORG", "LOC"])]
                results.append(
                    {"id": f"n{k}", "from_name": "label", "to_name": "text"}
                    | {"type": "labels", "value": value}
                )
            at += len(word) + 1
        return _task(task_id, {"text": text}, results)

    _stream(path, (task(i) for i in range(1, n + 1)))


def audio_corpus(path: Path, n: int) -> None:
    """``n`` transcribed audio tasks with their duration in the task data."""
    tasks = (
        _task(
            i,
            {"audio": f"s3://bucket/audio/{i}.wav", "duration": 1.0 + i % 7},
            [
                {
                    "id": "t",
                    "from_name": "transcription",
                    "to_name": "audio",
                    "type": "textarea",
                    "value": {"text": [f"utterance number {i}"]},
                }
            ],
        )
        for i in range(1, n + 1)
    )
    _stream(path, tasks)


def brush_corpus(path: Path, n: int) -> None:
    """``n`` tasks with one 128x96 brush mask each (a disc), RLE-encoded as Label Studio does."""
    from sync.exporters import rle

    width, height = 128, 96
    alpha = [
        255 if (x - 64) ** 2 + (y - 48) ** 2 < 900 else 0
        for y in range(height)
        for x in range(width)
    ]
    mask = rle.encode(bytes(v for a in alpha for v in (0, 0, 0, a)))
    result = {
        "id": "m",
        "from_name": "brush",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "value": {"format": "rle", "rle": mask, "brushlabels": ["Road"]},
    }
    tasks = (_task(i, {"image": f"s3://bucket/seg/{i}.png"}, [result]) for i in range(1, n + 1))
    _stream(path, tasks)


PEAK = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(u.ru_utime + u.ru_stime, u.ru_maxrss)"
)
RUNS = 3  # each figure is the median of this many runs


def measure(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, children included) and peak RSS (MB) of a
    command, each the median of ``RUNS`` runs (a wrapper process per run, so earlier runs
    do not count)."""
    walls, cpus, peaks = [], [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PEAK, *command], check=True, capture_output=True, text=True
        )
        walls.append(time.perf_counter() - start)
        cpu, peak = done.stdout.split()[-2:]
        cpus.append(float(cpu))
        peaks.append(int(peak) / 1024)
    return statistics.median(walls), statistics.median(cpus), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--formats", nargs="+", default=["YOLO", "COCO"])
    parser.add_argument("--no-sdk", action="store_true", help="annosync only")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--all-formats", action="store_true", help="every format (annosync)")
    args = parser.parse_args()
    if args.all_formats:
        return all_formats(args.tasks, args.json)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.tasks:
            source = Path(tmp) / f"export-{n}.json"
            corpus(source, n)
            for fmt in args.formats:
                ours = measure(
                    [
                        sys.executable,
                        "-m",
                        "sync.cli",
                        "convert",
                        str(source),
                        "-f",
                        fmt,
                        "-o",
                        f"{tmp}/ours-{n}-{fmt}",
                        "-c",
                        str(CONFIG),
                        "--overwrite",
                    ]
                )
                row = {
                    "tasks": n,
                    "format": fmt,
                    "annosync_s": round(ours[0], 2),
                    "annosync_cpu_s": round(ours[1], 2),
                    "annosync_peak_mb": round(ours[2]),
                }
                if not args.no_sdk:
                    theirs = measure(
                        [
                            sys.executable,
                            "-c",
                            SDK,
                            str(CONFIG),
                            fmt.lower(),
                            str(source),
                            f"{tmp}/sdk-{n}-{fmt}",
                        ]
                    )
                    row.update(
                        sdk_s=round(theirs[0], 2),
                        sdk_cpu_s=round(theirs[1], 2),
                        sdk_peak_mb=round(theirs[2]),
                        speedup_cpu=round(theirs[1] / ours[1], 1),
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def _ours(source: Path, fmt: str, out: str, config: Path) -> list[str]:
    command = [sys.executable, "-m", "sync.cli", "convert", str(source), "-f", fmt]
    return [*command, "-o", out, "-c", str(config), "--overwrite"]


def all_formats(sizes: list[int], json_out: str | None) -> None:
    """Every format on a corpus it fits; annosync only (wall time, peak RSS)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        brush_config = Path(tmp) / "brush.xml"
        brush_config.write_text(BRUSH_CONFIG)
        kinds = [
            ("image", corpus, CONFIG, IMAGE_FORMATS),
            ("text", text_corpus, TEXT_CONFIG, ["CONLL2003", "GCP_JSONL", "JSON_MIN"]),
            ("audio", audio_corpus, AUDIO_CONFIG, ["ASR_MANIFEST"]),
            ("brush", brush_corpus, brush_config, ["BRUSH_TO_PNG", "BRUSH_TO_NUMPY"]),
        ]
        for n in sizes:
            for kind, make, config, formats in kinds:
                source = Path(tmp) / f"{kind}-{n}.json"
                make(source, n)
                for fmt in formats:
                    out = f"{tmp}/{kind}-{n}-{fmt}"
                    wall, _cpu, peak = measure(_ours(source, fmt, out, config))
                    row = {"tasks": n, "project": kind, "format": fmt}
                    row.update(annosync_s=round(wall, 2), annosync_peak_mb=round(peak))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
