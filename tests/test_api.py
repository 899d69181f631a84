"""The /api routes (token), the OpenAPI document, and log redaction."""

from __future__ import annotations

import io
import logging
import re
import zipfile

import pytest
from conftest import Receiver, captured_sequence, make_settings, run_worker
from openapi_spec_validator import validate

from sync.exporters import exporter_names
from sync.logs import RedactingFilter, configure_logging
from sync.runtime import Runtime

TOKEN = "api-token-0123456789"


@pytest.fixture
def api(tmp_path, database_url, redis_url):
    rt = Runtime(make_settings(tmp_path, database_url, redis_url, api_token=TOKEN))
    r = Receiver(rt)
    for _name, body in [(n, b) for n, b in captured_sequence() if n < "10"]:
        r.post(body)
    run_worker(rt)
    yield r
    r.close()


def test_openapi_document_is_valid_and_covers_every_route(api):
    doc = api.get("/openapi.json").json()
    validate(doc)
    routes = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # Flask's <conv:name> is {name}
        for rule in api.app.url_map.iter_rules()
        # the status page is HTML for people (tests/test_status_page.py), not the API
        if rule.endpoint != "static" and not rule.endpoint.startswith("status_page.")
    }
    assert routes == set(doc["paths"])
    assert doc["components"]["schemas"]["ExportType"]["enum"] == exporter_names()
    assert {"YOLO", "COCO", "JSON_MIN", "TSV"} <= set(exporter_names())


@pytest.mark.parametrize("header", [None, "Token wrong-token-value", f"Bearer {TOKEN}"])
def test_api_routes_need_the_token(api, header):
    headers = {"Authorization": header} if header else {}
    response = api.get("/api/projects/1/status", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_livez_and_its_older_name_need_nothing(api):
    for path in ("/livez", "/healthz"):
        answer = api.get(path)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_project_status(api):
    status = api.get("/api/projects/1/status", headers={"Authorization": f"Token {TOKEN}"})
    assert status.status_code == 200
    body = status.json()
    assert (body["project"], body["tasks"], body["annotations"], body["pending"]) == (1, 3, 3, 0)


@pytest.mark.parametrize(
    "path", ["/api/projects/42/status", "/api/projects/42/export?exportType=YOLO"]
)
def test_a_project_annosync_never_heard_of_is_a_404(api, path):
    answer = api.get(path, headers={"Authorization": f"Token {TOKEN}"})
    assert answer.status_code == 404
    assert answer.json() == {
        "error": "no_such_project",
        "message": "no project 42: annosync has received nothing of it",
    }


def test_direct_export_is_a_zip_of_the_format(api):
    response = api.get(
        "/api/projects/1/export?exportType=yolo&download_all_tasks=true",
        headers={"Authorization": f"Token {TOKEN}"},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        assert {"classes.txt", "data.yaml", "labels/1__1.txt", "labels/2__2.txt"} <= names
        assert archive.read("classes.txt").decode().splitlines()[:2] == ["Airplane", "Car"]


def test_unknown_export_type_is_400(api):
    response = api.get(
        "/api/projects/1/export?exportType=PDF", headers={"Authorization": f"Token {TOKEN}"}
    )
    assert response.status_code == 400
    assert "COCO" in response.json()["message"]


def test_logs_never_show_secrets():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(("super-secret-value-1",)))
    log = logging.getLogger("annosync.test.redaction")
    log.addHandler(handler)
    log.propagate = False
    log.warning("header Authorization: Bearer super-secret-value-1 sent")
    log.warning('project {"token": "7hyVnvl5mBBdyOTULzS13Y3b6gbaHp3idVGcKPpC"}')
    log.warning("aws_secret_access_key=AKIAEXAMPLESECRET")
    log.warning("delivery %s from %s", 7, "super-secret-value-1")
    out = stream.getvalue()
    assert "super-secret-value-1" not in out
    assert "7hyVnvl5mBBdyOTULzS13Y3b6gbaHp3idVGcKPpC" not in out
    assert "AKIAEXAMPLESECRET" not in out
    assert out.count("***") == 4


def test_configure_logging_puts_the_filter_on_every_handler():
    configure_logging("info", ("another-secret-1",))
    handlers = logging.getLogger().handlers
    assert handlers
    assert all(
        any(isinstance(f, RedactingFilter) and "another-secret-1" in f.secrets for f in h.filters)
        for h in handlers
    )


def test_export_formats_say_which_fit_the_project_config(api):
    response = api.get(
        "/api/projects/1/export/formats", headers={"Authorization": f"Token {TOKEN}"}
    )
    assert response.status_code == 200
    formats = {f["name"]: f for f in response.json()["formats"]}
    assert not formats["YOLO"]["disabled"] and not formats["VOC"]["disabled"]
    assert formats["CONLL2003"]["disabled"]
    assert "Labels" in formats["CONLL2003"]["reason"]
    assert formats["ASR_MANIFEST"]["disabled"] and formats["BRUSH_TO_PNG"]["disabled"]


def test_export_in_a_format_the_config_does_not_fit_is_400_with_the_reason(api):
    response = api.get(
        "/api/projects/1/export?exportType=CONLL2003", headers={"Authorization": f"Token {TOKEN}"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "format_does_not_fit"
    assert "CONLL2003 needs Labels on" in body["message"]
