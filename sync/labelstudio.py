"""A thin client for the few Label Studio API calls annosync makes (pulls, webhooks).

Why not label-studio-sdk: annosync needs two GET endpoints; the SDK brings a large dependency
tree (pydantic models for the whole API, its converter, pandas-sized extras) into the
worker image, and its models would re-validate payloads we already validate with our own
schemas. ``requests`` is already here, and streaming the export is easier without the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import requests

from sync.errors import AnnosyncError
from sync.jsonstream import JSONStreamError, iter_array


class LabelStudioError(AnnosyncError):
    """A pull from Label Studio failed; the message is one line."""


class LabelStudioClient:
    """Calls Label Studio's REST API with a legacy token or a personal access token."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = (5.0, timeout_s)
        self.http = requests.Session()
        self._auth: str | None = None

    def _authorization(self) -> str:
        if self._auth is None:
            if self.api_key.count(".") == 2:  # a personal access token (JWT refresh token)
                access = self._post("/api/token/refresh", {"refresh": self.api_key})["access"]
                self._auth = f"Bearer {access}"
            else:
                self._auth = f"Token {self.api_key}"
        return self._auth

    def _post(self, path: str, body: dict, auth: bool = False, ok: int = 200) -> dict:
        headers = {"Authorization": self._authorization()} if auth else {}
        try:
            response = self.http.post(
                self.base_url + path, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise LabelStudioError(f"POST {path}: {type(exc).__name__}") from None
        return self._json(response, f"POST {path}", ok)

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self.http.get(
                self.base_url + path,
                params=params,
                headers={"Authorization": self._authorization()},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise LabelStudioError(f"GET {path}: {type(exc).__name__}") from None
        return self._json(response, f"GET {path}")

    @staticmethod
    def _json(response: requests.Response, what: str, ok: int = 200) -> Any:
        if response.status_code != ok:
            raise LabelStudioError(f"{what}: HTTP {response.status_code}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise LabelStudioError(f"{what}: the answer is not JSON") from None

    def projects(self) -> Iterator[dict[str, Any]]:
        """Every project the token can see (Label Studio pages them)."""
        page = 1
        while True:
            answer = self._get("/api/projects/", page=page, page_size=100)
            if isinstance(answer, list):  # an unpaged answer
                yield from answer
                return
            yield from answer.get("results", [])
            if not answer.get("next"):
                return
            page += 1

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """The webhooks of a project."""
        return self._get("/api/webhooks/", project=int(project_id))

    def create_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a webhook (``POST /api/webhooks/``, answered 201)."""
        return self._post("/api/webhooks/", body, auth=True, ok=201)

    def project(self, project_id: int) -> dict[str, Any]:
        """The project object (title, label_config, …)."""
        return self._get(f"/api/projects/{int(project_id)}")

    def download_export(self, project_id: int, out: BinaryIO) -> int:
        """Stream the project's JSON export (every task with all its annotations) into
        ``out``; returns the byte count. Nothing of it is held in memory."""
        path = f"/api/projects/{int(project_id)}/export"
        params = {"exportType": "JSON", "download_all_tasks": "true"}
        size = 0
        try:
            with self.http.get(
                self.base_url + path,
                params=params,
                stream=True,
                headers={"Authorization": self._authorization()},
                timeout=self.timeout,
            ) as response:
                if response.status_code != 200:
                    raise LabelStudioError(f"GET {path}: HTTP {response.status_code}")
                for chunk in response.iter_content(chunk_size=256 * 1024):
                    out.write(chunk)
                    size += len(chunk)
        except requests.RequestException as exc:
            raise LabelStudioError(f"GET {path}: {type(exc).__name__}") from None
        return size


def read_export(spool: BinaryIO) -> Iterator[dict[str, Any]]:
    """The tasks of a downloaded export, one at a time."""
    try:
        for task in iter_array(iter(lambda: spool.read(256 * 1024), b"")):
            if not isinstance(task, dict):
                raise LabelStudioError("an export item is not a task object")
            yield task
    except JSONStreamError as exc:
        raise LabelStudioError(f"the export is not a JSON list of tasks: {exc}") from None
