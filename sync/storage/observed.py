"""A storage backend that reports its failures by operation (for the metrics).

It wraps any :class:`~sync.storage.base.StorageBackend` and passes every call through;
only a :class:`StorageError` (the backends translate their own errors into it) is counted,
by the operation's name, before it propagates unchanged. A refused key is the caller's
input, not a storage failure, and is not counted. Nothing is added to a call that succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sync.storage.base import StorageBackend, StorageError, UnsafeKeyError

#: The operations of the storage interface (bounded: they are metric labels).
OPERATIONS = frozenset(
    {
        "put",
        "put_many",
        "put_file",
        "copy_many",
        "copy_in",
        "get",
        "open",
        "delete",
        "list",
        "list_digests",
        "check",
        "tidy",
    }
)
_ITERATING = frozenset({"list", "list_digests"})


class ObservedStorage:
    """``inner`` with ``on_error(operation)`` called for each failed operation."""

    def __init__(self, inner: StorageBackend, on_error: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_error = on_error

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in OPERATIONS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except UnsafeKeyError:
                raise
            except StorageError:
                self.on_error(name)
                raise
            return self._iterate(name, result) if name in _ITERATING else result

        return call

    def _iterate(self, name: str, items: Iterator[Any]) -> Iterator[Any]:
        # a listing fails while it is read, page by page, not when it is asked for
        try:
            yield from items
        except UnsafeKeyError:
            raise
        except StorageError:
            self.on_error(name)
            raise
