"""A local HTTP server answering the Label Studio API calls annosync makes, from captures."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class FakeLabelStudio:
    """Serves ``/api/projects/<id>`` and ``/api/projects/<id>/export`` for the given data."""

    def __init__(self, token: str, projects: dict[int, dict], exports: dict[int, list]):
        self.token, self.projects, self.exports = token, projects, exports
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    return self._send(
                        401, {"detail": "Authentication credentials were not provided."}
                    )
                parts = urlparse(self.path).path.strip("/").split("/")
                if len(parts) >= 3 and parts[:2] == ["api", "projects"] and parts[2].isdigit():
                    pid = int(parts[2])
                    if len(parts) == 3 and pid in fake.projects:
                        return self._send(200, fake.projects[pid])
                    if parts[3:] == ["export"] and pid in fake.exports:
                        return self._send(200, fake.exports[pid])
                return self._send(404, {"detail": "Not found."})

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
