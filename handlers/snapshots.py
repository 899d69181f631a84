"""``/api/projects/<id>/exports``: export snapshots shaped like Label Studio's, so its SDK
and scripts work against annosync (``Authorization: Token``)."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    request,
    stream_with_context,
)

from handlers.attachment import zip_attachment
from handlers.auth import require_api_token
from handlers.errors import error
from sync import snapshots
from sync.archives import ExportsBusy
from sync.exporters import exporter_names
from sync.materialise import GenerationNotFound
from sync.models import Snapshot

bp = Blueprint("snapshots", __name__)
CHUNK = 256 * 1024


bp.before_request(require_api_token)


@bp.errorhandler(snapshots.SnapshotRefused)
def _refused(exc: snapshots.SnapshotRefused):
    return error(400, "invalid_payload", str(exc), detail=[i.as_dict() for i in exc.issues])


@bp.errorhandler(GenerationNotFound)
def _no_generation(exc: GenerationNotFound):
    return error(404, "no_generation", str(exc))


def _found(project_id: int, export_pk: int, session) -> Snapshot:
    row = session.get(Snapshot, export_pk)
    if row is None or row.project_id != project_id:
        abort(404, description=f"project {project_id} has no export {export_pk}")
    return row


@bp.post("/api/projects/<id:project_id>/exports/", strict_slashes=False)
def create(project_id: int):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "invalid_json", "the body must be a JSON object")
    row = snapshots.create(current_app.config["RUNTIME"], project_id, body)
    return jsonify(snapshots.as_json(row)), 201


@bp.get("/api/projects/<id:project_id>/exports/", strict_slashes=False)
def listing(project_id: int):
    with current_app.config["RUNTIME"].sessions() as session:
        return jsonify([snapshots.as_json(r) for r in snapshots.listing(session, project_id)])


@bp.get("/api/projects/<id:project_id>/exports/<int:export_pk>", strict_slashes=False)
def one(project_id: int, export_pk: int):
    with current_app.config["RUNTIME"].sessions() as session:
        return jsonify(snapshots.as_json(_found(project_id, export_pk, session)))


@bp.delete("/api/projects/<id:project_id>/exports/<int:export_pk>", strict_slashes=False)
def remove(project_id: int, export_pk: int):
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as session:
        snapshots.remove(rt, session, _found(project_id, export_pk, session))
    return "", 204


@bp.get("/api/projects/<id:project_id>/exports/<int:export_pk>/download", strict_slashes=False)
def download(project_id: int, export_pk: int):
    """The snapshot as JSON (streamed from storage as it was made) or, with ``exportType``,
    converted by the exporters into a zip in an export process."""
    rt = current_app.config["RUNTIME"]
    fmt = (request.args.get("exportType") or "JSON").upper()
    if fmt not in exporter_names():
        names = ", ".join(exporter_names())
        return error(400, "invalid_export_type", f"exportType must be one of {names}")
    with rt.sessions() as session:
        row = _found(project_id, export_pk, session)
    if row.status != "completed":
        return error(409, "not_ready", f"export {export_pk} is {row.status}")
    name = f"project-{project_id}-export-{export_pk}"
    if fmt == "JSON":
        source = rt.storage.open(snapshots.key(project_id, export_pk))
        if source is None:
            return error(404, "not_found", f"the file of export {export_pk} is gone")
        return Response(
            stream_with_context(_chunks(source)),
            mimetype="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )
    try:
        archive, size = current_app.config["ARCHIVES"].render_snapshot(
            project_id, snapshots.key(project_id, export_pk), fmt
        )
    except ExportsBusy as exc:
        response = error(429, "exports_busy", str(exc))
        response.headers["Retry-After"] = "5"
        return response
    return zip_attachment(archive, size, f"{name}-{fmt}.zip")


def _chunks(source):
    try:
        while chunk := source.read(CHUNK):
            yield chunk
    finally:
        source.close()
