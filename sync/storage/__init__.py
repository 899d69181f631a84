"""Target storage backends, chosen by the storage URL's scheme.

A backend's module is imported when a URL of its scheme is first opened, so what only needs
keys (``check_key``, the errors) never loads a backend's client library (boto3 for ``s3``).
"""

from __future__ import annotations

import importlib
from urllib.parse import unquote, urlparse

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

#: The module registering each scheme's backend (with ``@register``).
BACKEND_MODULES = {"file": "sync.storage.local", "s3": "sync.storage.s3"}


def open_storage(url: str, **options: object) -> StorageBackend:
    """The backend for a storage URL (``file:///path`` or ``s3://bucket/prefix``)."""
    parsed = urlparse(url)
    if parsed.scheme in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[parsed.scheme])
    if parsed.scheme == "file":
        return backend_for("file")(unquote(parsed.path), **options)
    return backend_for(parsed.scheme)(parsed.netloc, parsed.path.strip("/"), **options)
