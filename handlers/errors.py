"""JSON error answers: every error is a JSON body, never an HTML page or a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("annosync.http")


def error(status: int, code: str, message: str, **extra):
    """A JSON error response."""
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error, and any unexpected exception, with JSON."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error(500, "internal_error", "internal error; see the server log")
