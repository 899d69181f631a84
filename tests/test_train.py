"""Opt-in (``-m ultralytics``; ``scripts/test-ultralytics`` installs what it needs): a
synced bucket trains Ultralytics as it is, with no dataset warning. A model is built from
its yaml (no downloaded weights) and trained one epoch on the CPU at a small image size."""

from __future__ import annotations

import logging
import os
import re

import pytest
from conftest import make_settings, run_worker
from test_incremental import _send
from test_media import FORMATS, MediaServer, _bucket, _label, _tasks

from sync.runtime import Runtime, set_runtime

pytestmark = pytest.mark.ultralytics


# What Ultralytics says of a dataset problem (some at INFO level: "ignoring corrupt
# image/label", "0 images, 3 corrupt", "labels not found", "duplicate labels removed").
DATASET_WARNING = re.compile(r"WARNING|[1-9]\d* corrupt|corrupt image|not found|missing|duplicate")


class _Heard(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.lines.append(text)
        if record.levelno >= logging.WARNING or DATASET_WARNING.search(text):
            self.warnings.append(text)


def test_ultralytics_trains_on_the_bucket(tmp_path, sqlite_url, redis_url):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_VERBOSE"] = "True"  # else its logger drops warnings before any handler
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path / "ultralytics-config")
    ultralytics = pytest.importorskip("ultralytics")
    served = MediaServer()
    options = {"export_formats": FORMATS, "media": True, "media_allow_private": True}
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, **options))
    set_runtime(rt)
    try:
        _send_dataset(rt, served)
        data = _bucket(rt) / "exports/1/yolo/data.yaml"
        model = ultralytics.YOLO("yolov8n.yaml")
        heard = _Heard()
        logging.getLogger("ultralytics").addHandler(heard)  # it does not propagate to root
        try:
            model.train(
                data=str(data),
                epochs=1,
                imgsz=64,
                batch=4,
                device="cpu",
                workers=0,
                amp=False,
                plots=False,
                val=True,
                project=str(tmp_path / "runs"),
                exist_ok=True,
            )
        finally:
            logging.getLogger("ultralytics").removeHandler(heard)
        assert heard.lines and not heard.warnings  # it spoke, and warned of nothing
        assert (tmp_path / "runs" / "train" / "weights" / "last.pt").exists()
    finally:
        served.close()
        set_runtime(None)


def _send_dataset(rt: Runtime, served: MediaServer) -> None:
    _send(rt, _tasks(served, range(1, 41)))
    for n in range(1, 41):
        _send(rt, _label(served, n, [("box", "Car", 5 + n, 10), ("box", "Bus", 50, 40)], n))
    run_worker(rt)
