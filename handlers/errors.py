"""JSON error answers: every error is a JSON body, never an HTML page or a traceback."""

from __future__ import annotations

import logging
import re

from flask import Flask, jsonify
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import BaseConverter

from sync.errors import AnnosyncError, InvalidInput, Unavailable, UnknownProject
from sync.storage import StorageError

log = logging.getLogger("annosync.http")


def error(status: int, code: str, message: str, **extra):
    """A JSON error response."""
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


MAX_ID = 2**63
_DIGITS = re.compile(r"[0-9]{1,19}")


class InvalidId(BadRequest):
    """An id in the URL that is not ASCII digits for 1 <= id < 2**63."""

    def __init__(self, name: str, value: str) -> None:
        super().__init__(f"{name} must be an integer from 1 to {MAX_ID - 1}, not {value[:40]!r}")
        self.segment = name


class IdConverter(BaseConverter):
    """``<id:name>``: Label Studio ids in URLs. Werkzeug's ``int`` accepts any Unicode digit
    and any size; this accepts ASCII digits for 1 <= id < 2**63 and answers 400 naming the
    segment otherwise (any segment is matched, so a bad id is never a vague 404)."""

    regex = r"[^/]+"

    def to_python(self, value: str) -> int:
        if _DIGITS.fullmatch(value) and 0 < int(value) < MAX_ID:
            return int(value)
        raise InvalidId("project_id", value)

    def to_url(self, value: int) -> str:
        return str(value)


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error, and any unexpected exception, with JSON."""

    @app.errorhandler(InvalidId)
    def _invalid_id(exc: InvalidId):
        detail = [{"path": exc.segment, "message": exc.description, "rule": "id"}]
        return error(400, "invalid_id", exc.description, detail=detail)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Unavailable)
    def _unavailable(exc: Unavailable):
        log.error("service unavailable: %s", type(exc).__name__)
        response = error(503, "unavailable", "a service annosync needs is unavailable; retry")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(UnknownProject)
    def _unknown_project(exc: UnknownProject):
        return error(404, "no_such_project", str(exc))

    @app.errorhandler(InvalidInput)
    def _invalid(exc: InvalidInput):
        return error(400, "invalid_request", str(exc))

    @app.errorhandler(StorageError)
    def _storage(exc: StorageError):
        log.error("storage failed: %s", exc)
        response = error(503, "storage_unavailable", "the storage failed; retry")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(AnnosyncError)
    def _failed(exc: AnnosyncError):
        log.error("%s: %s", type(exc).__name__, exc)
        return error(500, "failed", str(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error(500, "internal_error", "internal error; see the server log")
