"""A local HTTP server answering the Label Studio API calls annosync makes, from captures."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WEBHOOK_FIELDS = {"project", "url", "send_payload", "send_for_all_actions", "headers", "is_active"}
HEADER_NAME = re.compile(r"^[a-zA-Z0-9-_]+$")  # Label Studio's HEADERS_SCHEMA


class FakeLabelStudio:
    """Serves ``/api/projects/<id>``, ``/api/projects/<id>/export``, the project list (two
    per page, as Label Studio pages it) and ``/api/webhooks/`` for the given data. A created
    webhook is checked as Label Studio 1.23 checks it: an existing project (none: 404, as
    for an organisation-wide webhook), an http(s) URL, at most 10 headers with plain names."""

    def __init__(self, token: str, projects: dict[int, dict], exports: dict[int, list]):
        self.token, self.projects, self.exports = token, projects, exports
        self.requests: list[str] = []
        self.webhooks: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    return self._send(
                        401, {"detail": "Authentication credentials were not provided."}
                    )
                parts = urlparse(self.path).path.strip("/").split("/")
                query = parse_qs(urlparse(self.path).query)
                if parts == ["api", "projects"]:
                    return self._send(200, fake.project_page(int(query["page"][0])))
                if parts == ["api", "webhooks"]:
                    project = int(query["project"][0])
                    hooks = [h for h in fake.webhooks if h["project"] == project]
                    return self._send(200, hooks)
                if len(parts) >= 3 and parts[:2] == ["api", "projects"] and parts[2].isdigit():
                    pid = int(parts[2])
                    if len(parts) == 3 and pid in fake.projects:
                        return self._send(200, fake.projects[pid])
                    if parts[3:] == ["export"] and pid in fake.exports:
                        return self._send(200, fake.exports[pid])
                return self._send(404, {"detail": "Not found."})

            def do_POST(self):
                fake.requests.append("POST " + self.path)
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    return self._send(401, {"detail": "not authenticated"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if urlparse(self.path).path != "/api/webhooks/":
                    return self._send(404, {"detail": "Not found."})
                if body.get("project") not in fake.projects:
                    return self._send(404, {"detail": "Not found."})
                problem = fake.webhook_problem(body)
                if problem:
                    return self._send(400, {"validation_errors": problem})
                hook = {"id": len(fake.webhooks) + 1, **body}
                fake.webhooks.append(hook)
                return self._send(201, hook)

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

    def project_page(self, page: int) -> dict:
        ids = sorted(self.projects)
        chunk = ids[(page - 1) * 2 : page * 2]
        more = page * 2 < len(ids)
        return {
            "count": len(ids),
            "next": f"{self.url}/api/projects/?page={page + 1}" if more else None,
            "results": [{"id": i, **self.projects[i]} for i in chunk],
        }

    @staticmethod
    def webhook_problem(body: dict) -> str | None:
        if set(body) != WEBHOOK_FIELDS:
            return f"fields {sorted(body)} are not {sorted(WEBHOOK_FIELDS)}"
        if not str(body["url"]).startswith(("http://", "https://")):
            return "url: Enter a valid URL."
        headers = body["headers"]
        if len(headers) > 10 or not all(HEADER_NAME.match(k) for k in headers):
            return "headers: not a valid header object"
        flags = WEBHOOK_FIELDS - {"project", "url", "headers"}
        if not all(isinstance(body[k], bool) for k in flags):
            return "the flags must be booleans"
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
