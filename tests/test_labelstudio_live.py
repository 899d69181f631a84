"""Opt-in: a real Label Studio sends its webhooks to annosync (``scripts/test -m labelstudio``).

Follows the recipe of the fixtures' README. Needs the ``label-studio`` command: install
``label-studio==1.23.2`` into a separate venv and set ``LABEL_STUDIO_BIN`` to its
``bin/label-studio`` (or have it on PATH). Takes about a minute (Label Studio's start-up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import FIXTURES, SECRET, Receiver, bucket, make_settings, run_worker, task_file

from sync.launcher import free_port, terminate
from sync.runtime import Runtime, set_runtime

pytestmark = pytest.mark.labelstudio
LS_BIN = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
TOKEN = "annosync-live-test-token-0123456789abcdef"


def _api(base: str, method: str, path: str, body=None):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:500]


@pytest.fixture
def label_studio(tmp_path):
    if not LS_BIN:
        pytest.skip(
            "label-studio is not installed: pip install label-studio==1.23.2 into a venv "
            "and set LABEL_STUDIO_BIN"
        )
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls-data"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "CONVERTER_DOWNLOAD_RESOURCES": "false",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "WEBHOOK_TIMEOUT": "5",
    }
    log = (tmp_path / "ls.log").open("wb")
    proc = subprocess.Popen(
        [
            LS_BIN,
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--host",
            f"http://127.0.0.1:{port}",
            "--username",
            "admin@example.com",
            "--password",
            "annosync-pass-123",
            "--user-token",
            TOKEN,
            "--enable-legacy-api-token",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        terminate([proc])
        log.close()
        pytest.fail("Label Studio did not start; see ls.log")
    yield base
    terminate([proc])
    log.close()


def test_real_label_studio_session_is_mirrored(label_studio, tmp_path, sqlite_url, redis_url):
    rt = Runtime(
        make_settings(
            tmp_path,
            sqlite_url,
            redis_url,
            label_studio_url=label_studio,
            label_studio_api_key=TOKEN,
        )
    )
    set_runtime(rt)
    receiver = Receiver(rt)
    try:
        config = (FIXTURES / "configs" / "image-od.xml").read_text()
        _, project = _api(
            label_studio, "POST", "/api/projects/", {"title": "live", "label_config": config}
        )
        pid = project["id"]
        hook = f"{receiver.base}/webhooks/label-studio/{pid}"
        for send_payload in (True, False):
            status, _ = _api(
                label_studio,
                "POST",
                "/api/webhooks/",
                {
                    "project": pid,
                    "url": hook,
                    "send_payload": send_payload,
                    "send_for_all_actions": True,
                    "is_active": True,
                    "headers": {"Authorization": f"Bearer {SECRET}"},
                },
            )
            assert status == 201
        _api(
            label_studio,
            "POST",
            f"/api/projects/{pid}/import",
            [{"data": {"image": f"http://127.0.0.1:9/img/{n}.jpg"}} for n in (1, 2, 3)],
        )
        _, tasks = _api(label_studio, "GET", f"/api/tasks?project={pid}&page_size=100")
        t1, t2, _t3 = sorted(
            t["id"] for t in (tasks["tasks"] if isinstance(tasks, dict) else tasks)
        )
        box = {
            "id": "r1",
            "from_name": "bbox",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 1280,
            "original_height": 720,
            "value": {
                "x": 10,
                "y": 20,
                "width": 30,
                "height": 15,
                "rotation": 0,
                "rectanglelabels": ["Car"],
            },
        }
        _, a1 = _api(label_studio, "POST", f"/api/tasks/{t1}/annotations/", {"result": [box]})
        _api(
            label_studio,
            "PATCH",
            f"/api/annotations/{a1['id']}/",
            {"result": [{**box, "value": {**box["value"], "x": 11}}]},
        )
        _api(label_studio, "POST", f"/api/tasks/{t1}/annotations/", {"result": [box]})
        _api(label_studio, "POST", f"/api/tasks/{t2}/annotations/", {"result": [box]})
        _api(label_studio, "DELETE", f"/api/annotations/{a1['id']}/")
        _api(label_studio, "DELETE", f"/api/tasks/{t2}/")
        run_worker(rt)
        _, export = _api(
            label_studio,
            "GET",
            f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true",
        )
    finally:
        receiver.close()
    assert {int(p.stem) for p in (bucket(rt) / "tasks").glob("*.json")} == {t["id"] for t in export}
    for entry in export:
        doc = task_file(rt, entry["id"])
        assert [a["id"] for a in doc["annotations"]] == [a["id"] for a in entry["annotations"]]
        assert [a["result"] for a in doc["annotations"]] == [
            a["result"] for a in entry["annotations"]
        ]
