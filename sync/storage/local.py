"""Local-folder storage: each object a file, replaced atomically (never half-written).

Small objects are written through reusable scratch files (see :mod:`sync.storage.scratch`);
large ones through a new temporary file beside the target, fsynced and renamed over it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sync.storage.base import StorageError, UnsafeKeyError, check_key, register
from sync.storage.scratch import SCRATCH_DIR, SMALL, ScratchPool, exchange, make_durable


@register("file")
class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, root: str | Path, **_options: object) -> None:
        self.root = Path(root).resolve()
        self._folders: dict[str, Path] = {}  # key prefix -> its existing, confined folder
        self._scratch = ScratchPool(self.root)
        self._exchanges = True  # until the filesystem says it cannot

    @staticmethod
    def _key(key: str) -> str:
        if check_key(key).partition("/")[0] == SCRATCH_DIR:
            raise UnsafeKeyError(f"storage key {key[:80]!r} is in the scratch folder")
        return key

    def _path(self, key: str) -> Path:
        path = (self.root / self._key(key)).resolve()
        return self._confined(key, path)

    def _confined(self, key: str, path: Path) -> Path:
        if not path.is_relative_to(self.root):  # a symlink inside the root pointing out
            raise StorageError(f"key {key!r} resolves outside the storage root")
        return path

    def _folder(self, key: str) -> Path:
        """The existing folder a new object of ``key`` goes into, created if needed.

        Remembered per folder: resolving and creating it for every file was most of a write.
        Only the folder needs confining: the file itself is replaced by a rename, which does
        not follow a symlink standing in its place.
        """
        prefix = self._key(key).rpartition("/")[0]
        folder = self._folders.get(prefix)
        if folder is None:
            folder = self._confined(key, (self.root / prefix).resolve())
            folder.mkdir(parents=True, exist_ok=True)
            if len(self._folders) > 10_000:
                self._folders.clear()
            self._folders[prefix] = folder
        return folder

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.put_many([(key, data)])

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Small objects: each written into a scratch file, all made durable together, then
        each swapped in; large ones one by one. In order: the later of two writes wins."""
        staged: list[tuple[str, Path, int]] = []
        key = ""
        try:
            for key, data in items:
                if len(data) > SMALL:
                    self._install_all(staged)
                    self._write_large(key, data)
                    continue
                self._folder(key)  # confined (and created) before anything is written
                path, fd = self._scratch.open()
                staged.append((key, path, fd))
                _overwrite(fd, data)
            self._install_all(staged)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc
        finally:
            for _key, path, fd in staged:  # not installed: their content was never visible
                if fd >= 0:
                    _close(fd)
                self._scratch.give_back(path, published=False)

    def _install_all(self, staged: list[tuple[str, Path, int]]) -> None:
        """Make the staged scratch files durable, then install them in order; each leaves
        ``staged`` once installed (the caller gives back what is left after a failure)."""
        make_durable([fd for _key, _path, fd in staged])
        for _key, _path, fd in staged:
            _close(fd)
        staged[:] = [(key, path, -1) for key, path, _fd in staged]
        while staged:
            key, path, _fd = staged[0]
            self._install(path, key)
            staged.pop(0)

    def _install(self, scratch: Path, key: str) -> None:
        """Put a durable scratch file in the place of ``key``'s file."""
        name = key.rpartition("/")[2]
        for attempt in (1, 2):
            target = self._folder(key) / name
            try:
                if self._exchanges and _is_plain_file(target):
                    if exchange(scratch, target):  # the scratch name now holds the old file
                        self._scratch.give_back(scratch, published=True)
                        return
                    self._exchanges = False
                os.replace(scratch, target)
                return
            except FileNotFoundError:  # the folder was removed since it was remembered
                self._folders.pop(key.rpartition("/")[0], None)
                if attempt == 2:
                    raise
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # The folder is another filesystem mounted inside the root: write it there.
                self._write(target.parent, name, scratch.read_bytes())
                self._scratch.give_back(scratch, published=False)
                return

    def _write_large(self, key: str, data: bytes) -> None:
        try:
            self._write(self._folder(key), key.rpartition("/")[2], data)
        except FileNotFoundError:  # the folder was removed since it was remembered
            self._folders.pop(key.rpartition("/")[0], None)
            self._write(self._folder(key), key.rpartition("/")[2], data)

    @staticmethod
    def _write(folder: Path, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
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
        for dirpath, dirs, files in os.walk(base):
            if dirpath == str(base) and SCRATCH_DIR in dirs:
                dirs.remove(SCRATCH_DIR)
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


def _overwrite(fd: int, data: bytes) -> None:
    """Make the open file hold exactly ``data`` (rewriting in place keeps its blocks)."""
    view, offset = memoryview(data), 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)
    os.ftruncate(fd, len(data))


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
