"""Where a task's files go: its media reference, a safe and stable file stem, its split."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from posixpath import basename, splitext
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from sync.exporters.base import DEFAULT_SPLIT, ExportContext

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_url(task: dict[str, Any], object_value: str | None) -> str:
    """The task's image reference (the config's object value key, else the first string)."""
    data = task.get("data") or {}
    if object_value and isinstance(data.get(object_value), str):
        return data[object_value]
    return next((v for v in data.values() if isinstance(v, str)), "")


def object_data(task: dict[str, Any], ctx: ExportContext, types: tuple[str, ...]) -> str | None:
    """The task's string under the data key of the config's first object tag of ``types``
    (``Text``, ``Audio``…); None without a config or such a value."""
    data = task.get("data") or {}
    for obj in (ctx.config or {}).get("objects", []):
        if obj["type"] in types and isinstance(data.get(obj["value"]), str):
            return data[obj["value"]]
    return None


def url_path(url: str) -> str:
    """The percent-decoded path of a media URL. A URL Python cannot parse (``http://[::1/x``,
    an unclosed IPv6 host) still has a path: the text before any query or fragment, after
    the host, so a task with such a URL exports like any other instead of failing."""
    try:
        parsed = urlparse(url)
        path = parsed.path
        # Label Studio local files name the file in the query: /data/local-files/?d=dir/a.jpg
        if path.endswith("/local-files/") and (named := parse_qs(parsed.query).get("d")):
            return named[0]
    except ValueError:
        path = re.split(r"[?#]", url, maxsplit=1)[0]
        scheme, sep, rest = path.partition("://")
        path = "/" + rest.partition("/")[2] if sep else scheme
    return unquote(path or "")


@lru_cache(maxsize=1)  # the formats of a task ask in turn; one entry holds one URL at most
def file_stem(task_id: int, url: str) -> tuple[str, str]:
    """A safe, stable, collision-free file stem and the image extension.

    ``<task id>__<sanitised basename>``: the basename comes from the URL path (query and
    fragment dropped, percent-decoding applied), with anything but ``[A-Za-z0-9._-]``
    replaced; no ``/``, ``..`` or control characters survive; length is bounded. The task
    id prefix keeps two tasks with the same basename apart.
    """
    name = basename(url_path(url).replace("\\", "/"))
    stem, ext = splitext(name)
    stem = _UNSAFE.sub("_", stem).strip("._")[:80] or "image"
    ext = ext.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", ext.lower()) else ".jpg"
    return f"{int(task_id)}__{stem}", ext


@lru_cache(maxsize=4096)  # a sha256 per call; the formats of a task ask in turn
def split_of(task_id: int, ratios: tuple[tuple[str, float], ...] = DEFAULT_SPLIT) -> str:
    """The task's split: a pure function of its id, so it never moves as the project grows."""
    digest = hashlib.sha256(f"annosync-split:{int(task_id)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(share for _, share in ratios)
    edge = 0.0
    for name, share in ratios:
        edge += share / total
        if fraction < edge:
            return name
    return ratios[-1][0]


def export_root(project_id: int, folder: str) -> str:
    """Storage prefix of a project's format folder."""
    return f"exports/{int(project_id)}/" + (f"{folder}/" if folder else "")
