"""``/api/projects/<id>/generations``: the pinned generations of a project, a manifest, and a
download of one generation (zip, every object verified), behind ``Authorization: Token``."""

from __future__ import annotations

import tempfile

from flask import Blueprint, abort, current_app, jsonify, request

from handlers.attachment import zip_attachment
from handlers.auth import require_api_token
from handlers.errors import error
from sync import generations, materialise
from sync.materialise import GenerationNotFound

bp = Blueprint("generations", __name__)


bp.before_request(require_api_token)


@bp.errorhandler(GenerationNotFound)
def _not_found(exc: GenerationNotFound):
    if exc.expired:
        return error(410, "generation_expired", str(exc))
    return error(404, "no_such_generation", str(exc))


def _number(value: str) -> int | None:
    if value == "latest":
        return None
    if value.isascii() and value.isdigit() and 0 < int(value) < 2**31:
        return int(value)
    message = f"generation must be a number from 1 to {2**31 - 1} or 'latest', not {value[:40]!r}"
    detail = [{"path": "generation", "message": message, "rule": "generation"}]
    abort(error(400, "invalid_generation", message, detail=detail))


@bp.get("/api/projects/<id:project_id>/generations")
def listing(project_id: int):
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as session:
        entries = generations.index(session, project_id)
    return jsonify({"project": project_id, "generations": entries})


@bp.get("/api/projects/<id:project_id>/generations/<string:number>")
def manifest(project_id: int, number: str):
    rt = current_app.config["RUNTIME"]
    storage = rt.storage
    listed = materialise.find(
        materialise.read_index(storage, project_id), project_id, _number(number)
    )
    found = generations.read_manifest(storage, project_id, listed["generation"], listed["sha256"])
    return jsonify(found)


@bp.get("/api/projects/<id:project_id>/generations/<string:number>/download")
def download(project_id: int, number: str):
    """The generation as a zip (``?format=F``: only that format's files, or ``tasks``)."""
    rt = current_app.config["RUNTIME"]
    spool = tempfile.TemporaryFile(prefix="annosync-generation-")  # noqa: SIM115  (streamed)
    try:
        fmt = request.args.get("format") or None
        got = materialise.write_zip(rt.storage, project_id, _number(number), fmt, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    name = f"project-{project_id}-generation-{got}" + (f"-{fmt.upper()}" if fmt else "") + ".zip"
    return zip_attachment(spool, size, name)
