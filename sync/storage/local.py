"""Local-folder storage: each object a file, written via a temp file and an atomic rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sync.storage.base import StorageError, check_key, register


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

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
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
                if name.startswith(".tmp-"):
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
