"""Local-folder storage: each object a file, replaced atomically (never half-written).

The textbook way: each object is written into a new temporary file beside its target,
fsynced, and renamed over the target (``os.replace``); once per batch, every folder that
received a file is fsynced, so the renames themselves survive a power loss. When
:meth:`LocalStorage.put_many` returns, every object it wrote is on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sync.storage.base import StorageError, check_key, register

TEMP_PREFIX = ".tmp-"  # temporary files: never listed as objects


@register("file")
class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, root: str | Path, **_options: object) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # a symlink inside the root pointing out
            raise StorageError(f"key {key!r} resolves outside the storage root")
        return path

    def _folder(self, key: str) -> Path:
        """The existing, confined folder ``key``'s file goes into (created if needed). Only
        the folder needs confining: the file is replaced by a rename, which does not follow
        a symlink standing in its place."""
        prefix = check_key(key).rpartition("/")[0]
        folder = (self.root / prefix).resolve()
        if not folder.is_relative_to(self.root):
            raise StorageError(f"key {key!r} resolves outside the storage root")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.put_many([(key, data)])

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Each object replaced in order (the later of two writes of a key wins), then each
        folder written into fsynced once."""
        folders: set[Path] = set()
        key = ""
        try:
            for key, data in items:
                folder = self._folder(key)
                _replace(folder, key.rpartition("/")[2], data)
                folders.add(folder)
            for folder in folders:
                _fsync_folder(folder)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def list_digests(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        for key in self.list(prefix):
            try:
                digest = hashlib.md5(self._path(key).read_bytes()).hexdigest()
            except FileNotFoundError:
                continue  # removed while listing
            except OSError as exc:
                raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc
            yield key, digest

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageError(f"storage root {self.root} is not writable")
        except OSError as exc:
            raise StorageError(f"storage root {self.root}: {exc.strerror or exc}") from exc


def _replace(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` to a durable temporary file in ``folder`` and rename it to ``name``;
    on any failure the temporary file is removed and the old file is untouched."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Make the renames into ``folder`` durable (a rename is a change of the folder)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
