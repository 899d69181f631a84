"""CI retraining triggers: signed, recorded before sending, retried, disabled by a 410,
never lost with a killed worker; and the exact requests of the GitHub and GitLab presets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pytest
from conftest import make_settings, run_worker
from test_incremental import _annotation, _send, _tasks_created
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from config.settings import SettingsError, load_settings
from config.triggers import Trigger
from sync import cli, generations, launcher, materialise, triggers
from sync.models import TriggerDelivery
from sync.runtime import Runtime, set_runtime
from tests.served import post, receiver_env, served, update_body

ROOT = Path(__file__).resolve().parents[1]
KEY = b"annosync-trigger-test-key-32byte"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()


class CI:
    """A local HTTP server standing in for a CI system: records every request and answers
    with the next status of ``answers`` (then 200)."""

    def __init__(self, answers=(), delay_s: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.answers = list(answers)
        self.delay_s = delay_s
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def _app(self, request: Request) -> Response:
        self.requests.append(
            {
                "at": time.monotonic(),
                "path": request.path,
                "headers": dict(request.headers),
                "body": request.get_data(),
            }
        )
        time.sleep(self.delay_s)
        status = self.answers.pop(0) if self.answers else 200
        return Response(b"{}", status=status, mimetype="application/json")

    def close(self) -> None:
        self.server.shutdown()


def verify_standard_webhook(secret: str, headers: dict, body: bytes) -> dict:
    """Standard Webhooks verification, written from the specification (not annosync's)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["Webhook-Id"], headers["Webhook-Timestamp"]
    assert abs(time.time() - int(stamp)) < 300
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    offered = [s.split(",", 1)[1] for s in headers["Webhook-Signature"].split() if "," in s]
    assert any(hmac.compare_digest(expected, s) for s in offered)
    return orjson.loads(body)


def _runtime(tmp_path, database_url, redis_url, *trigger_list, **overrides) -> Runtime:
    options = {"triggers": tuple(trigger_list), "trigger_allow_private": True} | overrides
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, **options))
    set_runtime(rt)
    return rt


def _hook(ci: CI, **conditions) -> Trigger:
    options = {"min_changes": 3, "max_delay_s": 0.0, "min_interval_s": 0.0} | conditions
    return Trigger("ci", "webhook", ci.url + "/hook", WHSEC, **options)


def _label(rt, n: int, task_id: int) -> None:
    _send(rt, _annotation(1000 + task_id, task_id, [("box", "Car", n % 80, 5)], n))


@pytest.fixture(params=["local", "s3"])
def storage_overrides(request):
    if request.param == "local":
        return {}
    return {
        "storage_url": request.getfixturevalue("s3_url"),
        "s3_endpoint_url": request.getfixturevalue("s3_endpoint"),
    }


def test_a_signed_trigger_names_a_generation_that_stays_pullable(
    tmp_path, database_url, redis_url, storage_overrides, monkeypatch
):
    ci = CI()
    rt = _runtime(tmp_path, database_url, redis_url, _hook(ci), **storage_overrides)
    try:
        _send(rt, _tasks_created(range(1, 6)))
        run_worker(rt)  # 5 tasks added >= 3: one trigger, sent by the same worker
        assert len(ci.requests) == 1
        sent = ci.requests[0]
        event = verify_standard_webhook(WHSEC, sent["headers"], sent["body"])
        data = event["data"]
        assert event["type"] == "dataset.updated" and data["project"] == 1
        assert data["changes"]["tasks"] == {"added": 5, "changed": 0, "deleted": 0}
        assert data["previous_generation"] is None
        announced = data["generation"]
        listed = materialise.find(materialise.read_index(rt.storage, 1), 1, announced)
        assert data["manifest"]["sha256"] == listed["sha256"]

        for n in range(50):  # 50 more changes; the trigger fires again, N stays pullable
            _label(rt, n + 1, task_id=1 + n % 5)
            run_worker(rt)
        assert len(ci.requests) >= 2
        second = verify_standard_webhook(WHSEC, ci.requests[1]["headers"], ci.requests[1]["body"])
        assert second["data"]["previous_generation"] == announced
        assert second["data"]["changes"]["annotations"]["added"] >= 1

        monkeypatch.setenv("ANNOSYNC_STORAGE_URL", rt.settings.storage_url)
        if rt.settings.s3_endpoint_url:
            monkeypatch.setenv("ANNOSYNC_S3_ENDPOINT_URL", rt.settings.s3_endpoint_url)
        out = tmp_path / "pulled"
        assert cli.main(["pull", "--project", "1", "--generation", str(announced),
                         "--to", str(out)]) == 0  # fmt: skip
        manifest = orjson.loads((out / "generation.json").read_bytes())
        assert (
            hashlib.sha256(rt.storage.get(generations.manifest_key(1, announced))).hexdigest()
            == data["manifest"]["sha256"]
        )
        for entry in manifest["files"]:
            data_bytes = (out / entry["path"]).read_bytes()
            assert hashlib.sha256(data_bytes).hexdigest() == entry["sha256"]
        assert manifest["counts"]["annotations"] == 0  # as announced: before any label
    finally:
        ci.close()
        set_runtime(None)


def test_a_failed_send_is_retried_with_backoff_and_a_410_disables_the_endpoint(
    tmp_path, sqlite_url, redis_url, monkeypatch, capsys
):
    monkeypatch.setattr(triggers, "BACKOFF_S", (0.2, 0.4))
    ci = CI(answers=[500, 503])
    rt = _runtime(tmp_path, sqlite_url, redis_url, _hook(ci))
    try:
        _send(rt, _tasks_created(range(1, 5)))
        run_worker(rt)
        for _ in range(2):
            time.sleep(0.5)
            triggers.sweep(rt)
            run_worker(rt)
        with rt.sessions() as session:
            (row,) = session.query(TriggerDelivery).all()
            assert row.status == "delivered" and row.attempts == 3
        ids = {r["headers"]["Webhook-Id"] for r in ci.requests}
        assert len(ci.requests) == 3 and len(ids) == 1  # one message, retried under one id

        ci.answers = [410]
        for n in range(4):
            _label(rt, n + 1, task_id=n + 1)
        run_worker(rt)
        with rt.sessions() as session:
            statuses = [r.status for r in session.query(TriggerDelivery).order_by("id")]
        assert statuses == ["delivered", "disabled"]
        for n in range(4):  # the endpoint is off: nothing more is recorded or sent
            _label(rt, n + 10, task_id=n + 1)
        run_worker(rt)
        triggers.sweep(rt)
        run_worker(rt)
        assert len(ci.requests) == 4

        monkeypatch.setenv("ANNOSYNC_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("REDIS_URL", redis_url)
        assert cli.main(["triggers", "list", "--project", "1"]) == 0
        listed = capsys.readouterr().out
        assert "disabled" in listed and "410" in listed
        assert cli.main(["triggers", "replay", "2"]) == 0
        run_worker(rt)
        assert len(ci.requests) == 5
        with rt.sessions() as session:
            assert session.get(TriggerDelivery, 2).status == "delivered"
    finally:
        ci.close()
        set_runtime(None)


def test_a_worker_killed_mid_send_loses_no_trigger(tmp_path, sqlite_url, redis_url, monkeypatch):
    ci = CI(delay_s=30)  # the first request hangs: the worker is killed while it waits
    rt = _runtime(tmp_path, sqlite_url, redis_url, _hook(ci))
    try:
        _send(rt, _tasks_created(range(1, 5)))
        trigger = rt.settings.triggers[0]
        with monkeypatch.context() as patched:  # the decision only: the send happens below
            patched.setattr(triggers, "_queue_send", lambda *_: None)
            run_worker(rt)
        toml = tmp_path / "triggers.toml"
        toml.write_text(f'[[trigger]]\nname = "ci"\nurl = "{trigger.url}"\nsecret = "{WHSEC}"\n')
        env = {**os.environ, "ANNOSYNC_DATABASE_URL": sqlite_url, "REDIS_URL": redis_url,
               "ANNOSYNC_DATA_DIR": str(tmp_path / "data"), "ANNOSYNC_TRIGGER_ALLOW_PRIVATE": "1",
               "ANNOSYNC_TRIGGERS_FILE": str(toml)}  # fmt: skip
        sender = subprocess.Popen(
            [sys.executable, "-c", "import sys; from sync.runtime import Runtime; "
             "from config.settings import load_settings; from sync import triggers; "
             "triggers.send(Runtime(load_settings()), 1)"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not ci.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
        with rt.sessions() as session:
            row = session.get(TriggerDelivery, 1)
            assert row.status == "sending"
            row.claimed_until = row.claimed_until.replace(year=2000)  # its claim has run out
            session.commit()
        ci.delay_s = 0
        triggers.sweep(rt)
        run_worker(rt)
        with rt.sessions() as session:
            assert session.get(TriggerDelivery, 1).status == "delivered"
        assert len({r["headers"]["Webhook-Id"] for r in ci.requests}) == 1
    finally:
        ci.close()
        set_runtime(None)


def test_github_and_gitlab_presets_send_the_exact_requests(tmp_path, sqlite_url, redis_url):
    github, gitlab = CI(answers=[204]), CI(answers=[201])
    hooks = (
        Trigger("gh", "github", github.url + "/repos/acme/detector/dispatches", "ghp_token",
                min_changes=1, max_delay_s=0, min_interval_s=0, event_type="retrain"),
        Trigger("gl", "gitlab", gitlab.url + "/api/v4/projects/7/trigger/pipeline", "glptt-x",
                min_changes=1, max_delay_s=0, min_interval_s=0, ref="train"),
    )  # fmt: skip
    rt = _runtime(tmp_path, sqlite_url, redis_url, *hooks)
    try:
        _send(rt, _tasks_created(range(1, 3)))
        run_worker(rt)
        (gh,) = github.requests
        assert gh["path"] == "/repos/acme/detector/dispatches"
        assert gh["headers"]["Authorization"] == "Bearer ghp_token"
        assert gh["headers"]["Accept"] == "application/vnd.github+json"
        assert gh["headers"]["X-Github-Api-Version"] == "2022-11-28"
        body = orjson.loads(gh["body"])
        assert set(body) == {"event_type", "client_payload"} and body["event_type"] == "retrain"
        assert len(body["client_payload"]) <= 10
        assert body["client_payload"]["generation"] >= 1
        (gl,) = gitlab.requests
        assert gl["path"] == "/api/v4/projects/7/trigger/pipeline"
        assert gl["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        form = {k: v[0] for k, v in parse_qs(gl["body"].decode()).items()}
        assert form["token"] == "glptt-x" and form["ref"] == "train"
        assert form["variables[ANNOSYNC_PROJECT]"] == "1"
        assert form["variables[ANNOSYNC_GENERATION]"] == str(body["client_payload"]["generation"])
    finally:
        github.close()
        gitlab.close()
        set_runtime(None)


def test_a_trigger_to_a_private_address_is_refused_by_default(tmp_path, sqlite_url, redis_url):
    ci = CI()
    rt = _runtime(tmp_path, sqlite_url, redis_url, _hook(ci), trigger_allow_private=False)
    try:
        _send(rt, _tasks_created(range(1, 5)))
        run_worker(rt)
        assert ci.requests == []
        with rt.sessions() as session:
            row = session.get(TriggerDelivery, 1)
            assert row.status == "failed" and "private or local address" in row.last_error
    finally:
        ci.close()
        set_runtime(None)


def test_a_bad_trigger_file_stops_start_up_with_one_line(tmp_path):
    bad = tmp_path / "triggers.toml"
    bad.write_text('[[trigger]]\nname = "x"\nurl = "ftp://nope"\nsecret = "s"\n')
    with pytest.raises(SettingsError, match=r"ANNOSYNC_TRIGGERS_FILE.*trigger\.0\.url"):
        load_settings({"ANNOSYNC_TRIGGERS_FILE": str(bad)})
    good = tmp_path / "ok.toml"
    good.write_text(
        '[[trigger]]\nname = "gh"\ntarget = "github"\nsecret_env = "GH_TOKEN"\n'
        'url = "https://api.github.com/repos/a/b/dispatches"\nprojects = [3]\n'
    )
    with pytest.raises(SettingsError, match="GH_TOKEN is not set"):
        load_settings({"ANNOSYNC_TRIGGERS_FILE": str(good)})
    settings = load_settings({"ANNOSYNC_TRIGGERS_FILE": str(good), "GH_TOKEN": "ghp_x"})
    (trigger,) = settings.triggers
    assert trigger.target == "github" and trigger.watches(3) and not trigger.watches(4)
    assert "ghp_x" in settings.secret_values() and "ghp_x" not in repr(settings)


@pytest.mark.timing
def test_a_trigger_reaches_ci_within_the_debounce_plus_two_seconds(tmp_path, sqlite_url, redis_url):
    """The production shape: the receiver and a worker as processes; label changes arrive
    over HTTP, the signed trigger reaches the CI server within the debounce + 2 s."""
    ci = CI()
    env = receiver_env(
        tmp_path, sqlite_url, redis_url,
        ANNOSYNC_EXPORT_DEBOUNCE_MS="500",
        ANNOSYNC_TRIGGER_URLS=ci.url + "/hook", ANNOSYNC_TRIGGER_SECRET=WHSEC,
        ANNOSYNC_TRIGGER_MIN_CHANGES="3", ANNOSYNC_TRIGGER_MIN_INTERVAL_S="0",
        ANNOSYNC_TRIGGER_ALLOW_PRIVATE="1",
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "worker"], cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "error", **env},
    )  # fmt: skip
    try:
        with served(env) as base:
            for seq in (1, 2, 3):
                assert post(base, update_body(seq, task_id=seq))[0].status_code == 202
            sent = time.monotonic()
            deadline = sent + 30
            while not ci.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            assert ci.requests, "no trigger within 30 s"
            took = ci.requests[0]["at"] - sent
            event = verify_standard_webhook(
                WHSEC, ci.requests[0]["headers"], ci.requests[0]["body"]
            )
    finally:
        launcher.terminate([worker])
        ci.close()
    assert event["data"]["changes"]["tasks"]["added"] == 3
    assert took < 0.5 + 2, f"trigger after {took:.2f} s"
