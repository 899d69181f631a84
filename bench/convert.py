"""Full conversion of generated projects: annosync convert vs label-studio-sdk's converter.

Side by side in one run, each in its own process (wall time and peak RSS of that process).
Usage: .venv/bin/python bench/convert.py [--tasks 10000 100000] [--formats YOLO COCO]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests/fixtures/label-studio/configs/image-od-v2.xml"
LABELS = ["Airplane", "Car", "Truck"]

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
                    results.append(
                        {
                            "id": f"r{k}",
                            "type": "rectanglelabels",
                            "from_name": "bbox",
                            "to_name": "image",
                            "original_width": 1280,
                            "original_height": 720,
                            "value": {
                                "x": rng.uniform(0, 70),
                                "y": rng.uniform(0, 70),
                                "width": 20,
                                "height": 10,
                                "rotation": 0,
                                "rectanglelabels": [label],
                            },
                        }
                    )
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


PEAK = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process (measured by a wrapper process
    of its own, so earlier runs do not count)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    return wall, int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--formats", nargs="+", default=["YOLO", "COCO"])
    parser.add_argument("--no-sdk", action="store_true", help="annosync only")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
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
                    ]
                )
                row = {
                    "tasks": n,
                    "format": fmt,
                    "annosync_s": round(ours[0], 2),
                    "annosync_peak_mb": round(ours[1]),
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
                        sdk_peak_mb=round(theirs[1]),
                        speedup=round(theirs[0] / ours[0], 1),
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
