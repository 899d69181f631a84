"""Target storage backends, chosen by the storage URL's scheme."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from sync.storage import local as _local  # noqa: F401  (registers file://)
from sync.storage import s3 as _s3  # noqa: F401  (registers s3://)
from sync.storage.base import (
    StorageBackend,
    StorageError,
    UnsafeKeyError,
    backend_for,
    check_key,
    put_concurrently,
)

__all__ = [
    "StorageBackend",
    "StorageError",
    "UnsafeKeyError",
    "check_key",
    "open_storage",
    "put_concurrently",
]


def open_storage(url: str, **options: object) -> StorageBackend:
    """The backend for a storage URL (``file:///path`` or ``s3://bucket/prefix``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return backend_for("file")(unquote(parsed.path), **options)
    return backend_for(parsed.scheme)(parsed.netloc, parsed.path.strip("/"), **options)
