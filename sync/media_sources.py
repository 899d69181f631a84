"""Where a task's media come from: a small Protocol and a registry by short name.

A source turns a task's media reference (``/data/upload/…``, ``/data/local-files/?d=…``,
``s3://``, ``gs://``, ``http(s)://``) into bytes, bounded in size and time. Each answers
:class:`NotModified` when the caller's ETag still matches, and raises
:class:`MediaError` (one line, stored on the task) for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from config.settings import Settings
from sync import outbound
from sync.errors import AnnosyncError
from sync.exporters import get_exporter
from sync.exporters.files import export_root


class MediaError(AnnosyncError):
    """A media file could not be fetched (the message is one line, kept on the task)."""


@dataclass(frozen=True)
class Media:
    """A fetched media file."""

    data: bytes
    etag: str | None
    content_type: str


class NotModified(Exception):
    """The media's ETag still matches: nothing to copy."""


class MediaSource(Protocol):
    name: str

    def accepts(self, url: str) -> bool:
        """Whether this source fetches ``url``."""

    def fetch(self, url: str, etag: str | None) -> Media:
        """The bytes of ``url``; :class:`NotModified` if ``etag`` still matches."""


#: Content types refused for an image: an HTML login page saved as a photo is the classic.
_NOT_MEDIA = ("text/html", "application/json", "application/xml", "text/xml")


def _checked(found: outbound.Fetched, where: str) -> Media:
    if found.status == 304:
        raise NotModified
    if found.content_type in _NOT_MEDIA:
        raise MediaError(f"{where}: answered {found.content_type}, not a media file")
    return Media(found.body, found.etag, found.content_type)


class HttpSource:
    """``http(s)://`` URLs: public addresses only unless ANNOSYNC_MEDIA_ALLOW_PRIVATE."""

    name = "http"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def accepts(self, url: str) -> bool:
        return url.startswith(("http://", "https://"))

    def fetch(self, url: str, etag: str | None, headers: dict | None = None, **kw) -> Media:
        asked = dict(headers or {})
        if etag:
            asked["If-None-Match"] = etag
        options = {"allow_private": self.settings.media_allow_private} | kw
        try:
            found = outbound.get(
                url,
                asked,
                max_bytes=self.settings.media_max_bytes,
                timeout_s=self.settings.media_timeout_s,
                **options,
            )
        except outbound.OutboundError as exc:
            raise MediaError(str(exc)) from None
        return _checked(found, urlsplit(url).netloc)


class GcsSource(HttpSource):
    """``gs://bucket/key`` through Google's public endpoint (public objects)."""

    name = "gs"
    ENDPOINT = "https://storage.googleapis.com"

    def accepts(self, url: str) -> bool:
        return url.startswith("gs://")

    def fetch(self, url: str, etag: str | None, headers: dict | None = None, **kw) -> Media:
        parts = urlsplit(url)
        return super().fetch(f"{self.ENDPOINT}/{parts.netloc}{parts.path}", etag)


class LabelStudioSource(HttpSource):
    """Label Studio's own files: uploads (``/data/upload/…``) and local files
    (``/data/local-files/?d=…``), through LABEL_STUDIO_URL with its API key, or local files
    read from ANNOSYNC_MEDIA_LOCAL_FILES_ROOT when Label Studio runs on this machine."""

    name = "labelstudio"

    def accepts(self, url: str) -> bool:
        return url.startswith(("/data/upload/", "/data/local-files/"))

    def fetch(self, url: str, etag: str | None, headers: dict | None = None, **kw) -> Media:
        root = self.settings.media_local_files_root
        if root and url.startswith("/data/local-files/"):
            return _local_file(Path(root), url, self.settings.media_max_bytes)
        base, key = self.settings.label_studio_url, self.settings.label_studio_api_key
        if not base or not key:
            raise MediaError(
                "Label Studio media need LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
                " (or ANNOSYNC_MEDIA_LOCAL_FILES_ROOT for local files)"
            )
        # The operator's own Label Studio: its address may well be private.
        return super().fetch(
            base.rstrip("/") + url,
            etag,
            {"Authorization": f"Token {key}"},
            allow_private=True,
            setting="LABEL_STUDIO_URL",
        )


def _local_file(root: Path, url: str, max_bytes: int) -> Media:
    """A local-files path under ``root``; never outside it (``..``, absolute, symlinks)."""
    named = parse_qs(urlsplit(url).query).get("d", [""])[0]
    base = root.resolve()
    path = (base / unquote(named).lstrip("/")).resolve()
    if not named or not path.is_relative_to(base):
        raise MediaError(f"local file {named[:80]!r} is outside ANNOSYNC_MEDIA_LOCAL_FILES_ROOT")
    try:
        with path.open("rb") as source:
            data = source.read(max_bytes + 1)
    except OSError as exc:
        raise MediaError(f"local file {named[:80]!r}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise MediaError(f"local file {named[:80]!r}: more than {max_bytes} bytes")
    return Media(data, None, "application/octet-stream")


class S3Source:
    """``s3://bucket/key`` with the storage's endpoint and credentials (a server-side copy
    is tried first by the caller, through the storage backend)."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def client(self):
        timeout = self.settings.media_timeout_s
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
        return boto3.client("s3", endpoint_url=self.settings.s3_endpoint_url or None, config=config)

    def accepts(self, url: str) -> bool:
        return url.startswith("s3://")

    def fetch(self, url: str, etag: str | None) -> Media:
        bucket, key = split_s3(url)
        options = {"IfNoneMatch": etag} if etag else {}
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key, **options)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"304", "NotModified"}:
                raise NotModified from None
            raise MediaError(f"s3://{bucket}: {code or 'error'}") from None
        except BotoCoreError as exc:
            raise MediaError(f"s3://{bucket}: {type(exc).__name__}") from None
        limit = self.settings.media_max_bytes
        if answer.get("ContentLength", 0) > limit:
            answer["Body"].close()
            raise MediaError(f"s3://{bucket}: {answer['ContentLength']} bytes, more than {limit}")
        with answer["Body"] as body:
            data = body.read()
        return Media(data, answer.get("ETag"), answer.get("ContentType", ""))


def split_s3(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URL."""
    parts = urlsplit(url)
    return parts.netloc, unquote(parts.path.lstrip("/"))


_SOURCES = (LabelStudioSource, S3Source, GcsSource, HttpSource)


def sources(settings: Settings) -> dict[str, MediaSource]:
    """Every source, by short name, in the order they are asked."""
    return {cls.name: cls(settings) for cls in _SOURCES}


def source_for(found: dict[str, MediaSource], url: str) -> MediaSource:
    """The source that fetches ``url``; :class:`MediaError` when none does."""
    for source in found.values():
        if source.accepts(url):
            return source
    raise MediaError(f"no media source fetches {url[:80]!r}")


def reader(settings, storage=None, project_id: int | None = None):
    """Images for one-off exports (``convert``, downloads of ``*_WITH_IMAGES``): the copy the
    media sync keeps in the bucket when there is one, else a fetch from the image's source.
    A :data:`sync.convert.MediaReader`."""
    found = sources(settings)
    folders = [
        get_exporter(name).folder
        for name in settings.export_formats
        if get_exporter(name).media_folder
    ]

    def read(url: str, path: str) -> bytes:
        if storage is not None and project_id is not None and settings.media:
            for folder in folders:
                data = storage.get(export_root(project_id, folder) + path)
                if data is not None:
                    return data
        return source_for(found, url).fetch(url, None).data

    return read
