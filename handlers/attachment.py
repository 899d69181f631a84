"""A file sent as a download: the server streams it from its own loop
(``wsgi.file_wrapper``), not from an application thread."""

from __future__ import annotations

from typing import IO

from flask import Response, request
from werkzeug.wsgi import wrap_file


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
