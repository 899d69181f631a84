"""Downloads: an export of one format rendered by an export process, sent as a zip that the
server streams from its own loop (``wsgi.file_wrapper``), not from an application thread."""

from __future__ import annotations

from typing import IO

from flask import Response, current_app, request
from werkzeug.wsgi import wrap_file

from handlers.errors import error
from sync import exports, store
from sync.archives import ExportsBusy
from sync.exporters import exporter_names, get_exporter
from sync.exporters.capabilities import unfit_reason


def export_download(project_id: int, fmt: str) -> Response:
    """A zip of the project in ``fmt`` (400 for a format unknown or unfit for the project's
    label config; 429 while every export process is busy: webhooks keep their threads)."""
    if fmt not in exporter_names():
        return error(
            400, "invalid_export_type", f"exportType must be one of {', '.join(exporter_names())}"
        )
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as session:
        store.require_project(session, project_id)
        reason = unfit_reason(get_exporter(fmt), exports.project_config(session, project_id))
    if reason:
        return error(400, "format_does_not_fit", reason)
    try:
        archive, size = current_app.config["ARCHIVES"].render(project_id, fmt)
    except ExportsBusy as exc:
        response = error(429, "exports_busy", str(exc))
        response.headers["Retry-After"] = "5"
        return response
    return zip_attachment(archive, size, f"project-{project_id}-{fmt}.zip")


def zip_attachment(file: IO[bytes], size: int, name: str) -> Response:
    """A response sending the open zip ``file`` (at its start, ``size`` bytes) as ``name``;
    the server closes the file when it is sent."""
    return Response(
        wrap_file(request.environ, file),
        mimetype="application/zip",
        direct_passthrough=True,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
