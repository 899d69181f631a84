"""``/api/...``: project status and direct exports, behind ``Authorization: Token …``;
``/openapi.json`` describes every route."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request

from handlers.attachment import export_download
from handlers.auth import require_api_token
from sync import exports, status, store
from sync.exporters import exporter_names
from sync.exporters.capabilities import list_formats

bp = Blueprint("api", __name__)
OPENAPI = Path(__file__).resolve().parents[1] / "config" / "openapi.json"


@bp.before_request
def require_token():
    if request.endpoint == "api.openapi":
        return None
    return require_api_token()


@bp.get("/openapi.json")
def openapi():
    return Response(_openapi_document(), mimetype="application/json")


@cache
def _openapi_document() -> bytes:
    """The API description, with the export formats of this build (never a hand-kept list)."""
    doc = json.loads(OPENAPI.read_bytes())
    doc["components"]["schemas"]["ExportType"]["enum"] = exporter_names()
    return json.dumps(doc, indent=2).encode()


@bp.get("/api/projects/<id:project_id>/status")
def project_status(project_id: int):
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as session:
        store.require_project(session, project_id)
        report = status.project_status(session, project_id)["projects"][0]
        report["unexported_tasks"] = [
            {"task": task_id, "reason": reason}
            for task_id, _project, reason in store.failed_tasks(session, project_id)
        ]
    return jsonify(report)


@bp.get("/api/projects/<id:project_id>/export/formats")
def export_formats(project_id: int):
    """Every format, ``disabled`` (with the reason) where the project's config does not fit."""
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as session:
        config = exports.project_config(session, project_id)
    return jsonify({"project": project_id, "formats": list_formats(config)})


@bp.get("/api/projects/<id:project_id>/export")
def export(project_id: int):
    """A zip of one format rendered from the stored tasks by an export process (429 while
    every export process is busy: webhooks keep their threads)."""
    return export_download(project_id, (request.args.get("exportType") or "").upper())
