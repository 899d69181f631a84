"""The storage interface: whole objects by key, nothing about formats.

Keys are ``/``-separated relative paths. Every backend confines keys to its root: a key that
is absolute, empty, or walks out with ``..`` is refused with :class:`UnsafeKeyError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Protocol, runtime_checkable

from sync.errors import AnnosyncError, InvalidInput


class StorageError(AnnosyncError):
    """A storage operation failed (the backend's own errors are translated into this)."""


class UnsafeKeyError(StorageError, InvalidInput):
    """A key would escape the storage root or is otherwise not a plain relative path."""


@runtime_checkable
class StorageBackend(Protocol):
    """Where task files and exports are written."""

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Write the whole object atomically: readers see the old or the new bytes."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write several objects, each whole and atomic, in whatever way is fastest for the
        backend; on a failure, raise StorageError (some objects may be written)."""

    def put_file(self, key: str, source: BinaryIO) -> None:
        """Write the whole object from the binary file ``source`` (read from its current
        position to its end) without holding it in memory; atomic as :meth:`put`."""

    def copy_many(self, pairs: list[tuple[str, str]], replace: bool = False) -> None:
        """Make each ``(target, source)`` target hold the bytes its source holds now, as
        cheaply as the backend can (a hard link, a server-side copy). Writers replace
        objects whole, never in place, so a target keeps those bytes when its source is
        replaced later. Without ``replace``, callers copy to content-addressed keys only,
        so a target that exists holds these bytes already (a backend may skip it or write
        it again); with it, a target that exists is replaced whole, atomically."""

    def copy_in(self, target: str, bucket: str, key: str) -> str | None:
        """Copy ``key`` of another bucket of the same service to ``target`` server-side
        (no bytes travel through annosync); its ETag, or None when this backend cannot
        (the caller then fetches the bytes and writes them)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    def open(self, key: str) -> BinaryIO | None:
        """The object as a binary file to read in chunks (close it), or None."""

    def delete(self, key: str) -> None:
        """Remove the object if it exists."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in no particular order."""

    def list_digests(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        """``(key, md5 hex digest of the content)`` under ``prefix``; None if not known."""

    def check(self) -> None:
        """Raise StorageError when the storage cannot be reached (for readiness)."""

    def tidy(self) -> int:
        """Remove what writers killed mid-write left behind (a worker calls it as it starts);
        how many objects were removed."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise UnsafeKeyError."""
    if not key or len(key) > 1024 or key.startswith("/") or "\\" in key:
        raise UnsafeKeyError(f"unsafe storage key {key[:80]!r}")
    if _CONTROL.search(key) or any(part in {"", ".", ".."} for part in key.split("/")):
        raise UnsafeKeyError(f"unsafe storage key {key[:80]!r}")
    return key


def put_concurrently(
    put: Callable[[str, bytes], None], items: list[tuple[str, bytes]], workers: int
) -> None:
    """Run ``put`` for every item on up to ``workers`` threads (for backends whose writes wait
    on the network); the first failure is raised after the others finished."""
    if len(items) <= 1:
        for key, data in items:
            put(key, data)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(put, key, data) for key, data in items]
    for future in futures:
        future.result()


BackendFactory = Callable[..., StorageBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register(scheme: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory for a storage URL scheme (``file``, ``s3``…)."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[scheme] = factory
        return factory

    return decorate


def backend_for(scheme: str) -> BackendFactory:
    """The factory registered for ``scheme``."""
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise StorageError(f"no storage backend for {scheme!r}:// URLs") from None
