"""Bad input at the receiver's edge: each gets its documented 4xx with a JSON body, never a
5xx or a traceback, and no secret survives into an answer, an error or the inbox."""

from __future__ import annotations

import hashlib
import hmac
import logging

import orjson
import pytest
from conftest import SECRET, Receiver, delivery, make_settings
from sqlalchemy import select
from test_signatures import WHSEC, standard_headers

from sync.models import Delivery
from sync.runtime import Runtime

TOKEN = "api-token-0123456789"
LS_TOKEN = "ls-project-token-must-never-be-kept"


@pytest.fixture
def signed(tmp_path, database_url, redis_url):
    settings = make_settings(
        tmp_path, database_url, redis_url, signing_secrets=(WHSEC,), api_token=TOKEN
    )
    r = Receiver(Runtime(settings))
    yield r
    r.close()


def _rows(receiver: Receiver) -> list[Delivery]:
    with receiver.app.config["RUNTIME"].sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


@pytest.mark.parametrize("stamp", ["\xb2", "1" * 5000, "-5", "12.5"])
def test_a_malformed_signature_timestamp_is_401_without_a_traceback(signed, stamp, caplog):
    raw = orjson.dumps(delivery("05-ANNOTATION_UPDATED"))
    headers = {**standard_headers(raw), "webhook-timestamp": stamp}
    with caplog.at_level(logging.ERROR):
        response = signed.post(None, raw=raw, secret=None, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("depth", [65, 256, 600, 1024])
def test_json_nested_too_deep_is_400_and_quarantined(signed, depth):
    head = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "token": LS_TOKEN}}
    nested = b"[" * (depth - 1) + b"]" * (depth - 1)  # the whole body: ``depth`` levels
    raw = orjson.dumps(head)[:-1] + b',"annotation":' + nested + b"}"
    response = signed.post(None, raw=raw, path="/webhooks/label-studio/1", secret=SECRET)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["detail"][0]["rule"] == "maxDepth"
    assert answer["quarantine_id"] is not None
    (row,) = _rows(signed)
    assert row.status == "rejected" and row.project_id == 1
    assert LS_TOKEN.encode() not in row.body
    assert orjson.loads(row.body)["action"] == "ANNOTATION_CREATED"


@pytest.mark.parametrize(
    "segment", ["0", "00", "9223372036854775808", "99999999999999999999", "%D9%A1", "-1", "1a"]
)
def test_a_project_id_in_the_url_that_is_not_an_id_is_400_naming_it(signed, segment):
    body = delivery("05-ANNOTATION_UPDATED")
    response = signed.post(body, path=f"/webhooks/label-studio/{segment}", secret=SECRET)
    assert response.status_code == 400
    assert response.json()["detail"] == [
        {"path": "project_id", "message": response.json()["message"], "rule": "id"}
    ]
    api = signed.get(f"/api/projects/{segment}/status", headers={"Authorization": f"Token {TOKEN}"})
    assert api.status_code == 400 and api.json()["error"] == "invalid_id"
    assert _rows(signed) == []


def test_the_largest_id_is_accepted(signed):
    body = delivery("05-ANNOTATION_UPDATED")
    path = f"/webhooks/label-studio/{2**63 - 1}"
    assert signed.post(body, path=path, secret=SECRET).status_code == 202


@pytest.mark.parametrize("project", [2**63, 0, -3, "7", {"id": 2**63}, {"id": 0}])
def test_a_body_project_that_is_not_an_id_is_400(signed, project):
    body = {"action": "SOMETHING_NEW", "project": project}
    response = signed.post(body, path="/webhooks/label-studio", secret=SECRET)
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["path"].startswith("project")


def test_a_github_signed_replay_is_a_duplicate_whatever_its_webhook_id(signed):
    raw = orjson.dumps(delivery("13-TASKS_DELETED"))
    signature = "sha256=" + hmac.new(WHSEC.encode(), raw, hashlib.sha256).hexdigest()
    first, replay = (
        signed.post(
            None,
            raw=raw,
            path="/webhooks/label-studio/1",
            secret=None,
            headers={"X-Hub-Signature-256": signature, "webhook-id": webhook_id},
        )
        for webhook_id in ("a", "b")
    )
    assert first.status_code == 202 and first.json()["status"] in ("queued", "ignored")
    assert replay.json()["status"] == "duplicate"
    assert len(_rows(signed)) == 1


def test_standard_webhooks_ids_still_name_deliveries(signed):
    raw = orjson.dumps(delivery("05-ANNOTATION_UPDATED"))
    first = signed.post(None, raw=raw, secret=None, headers=standard_headers(raw, "msg_a"))
    again = signed.post(None, raw=raw, secret=None, headers=standard_headers(raw, "msg_b"))
    assert first.json()["status"] == "queued" and again.json()["status"] == "queued"
    same = signed.post(None, raw=raw, secret=None, headers=standard_headers(raw, "msg_a"))
    assert same.json()["status"] == "duplicate"


def _project_with_secrets() -> dict:
    project = dict(delivery("15-PROJECT_UPDATED")["project"])
    project.update(
        token=LS_TOKEN, task_data_login="login-alice-xyz", task_data_password="hunter2-pw"
    )
    return project


@pytest.mark.parametrize(
    "body",
    [
        # schema-invalid: the title has the wrong type, the token sits beside it
        lambda p: {"action": "PROJECT_UPDATED", "project": {**p, "title": 5}},
        # an array body
        lambda p: [{"action": "PROJECT_UPDATED", "project": p}],
        # a project object nested in a task of an invalid delivery
        lambda p: {"action": "TASKS_CREATED", "tasks": [{"id": "x", "project": p}]},
    ],
)
def test_secrets_of_malformed_deliveries_are_never_kept_or_echoed(signed, body):
    response = signed.post(body(_project_with_secrets()), secret=SECRET)
    assert response.status_code == 400
    text = response.text
    for secret in (LS_TOKEN, "hunter2-pw", "login-alice-xyz"):
        assert secret not in text
        for row in _rows(signed):
            assert secret.encode() not in row.body
            assert secret not in (row.errors or "")


def test_a_valid_delivery_with_secrets_is_stored_without_them(signed):
    body = {"action": "PROJECT_UPDATED", "project": _project_with_secrets()}
    assert signed.post(body, secret=SECRET).status_code == 202
    (row,) = _rows(signed)
    stored = orjson.loads(row.body)["project"]
    assert not {"token", "task_data_login", "task_data_password"} & stored.keys()
