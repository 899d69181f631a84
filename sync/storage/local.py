"""Local-folder storage: each object a file, replaced atomically (never half-written).

The textbook way: each object is written into a new temporary file beside its target,
fsynced, and renamed over the target (``os.replace``); once per batch, every folder that
received a file is fsynced, so the renames themselves survive a power loss. When
:meth:`LocalStorage.put_many` returns, every object it wrote is on disk; if it fails, the
objects it renamed are whole and the others untouched (no temporary file is left).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sync.storage.base import StorageError, check_key, register

TEMP_PREFIX = ".tmp-"  # temporary files: never listed as objects
TEMP_SUFFIX = ".part"
ABANDONED_AFTER_S = 3600.0  # a temporary file of another machine this old is left over
COPY_CHUNK = 1 << 20  # put_file copies a MiB at a time
# link() refused: another filesystem, none supported, too many links to one inode.
_NO_LINKS = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK}
BATCH = 256  # files written before their fsyncs (each holds a descriptor until renamed)


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

    def _folder(
        self, key: str, confined: dict[str, Path] | None = None, create: bool = True
    ) -> Path:
        """The existing, confined folder ``key``'s file goes into (created if needed). Only
        the folder needs confining: the file is replaced by a rename, which does not follow
        a symlink standing in its place. ``confined`` (prefix -> folder) lets a batch
        resolve each folder once: resolving costs a syscall per path component."""
        prefix = check_key(key).rpartition("/")[0]
        if confined is not None and prefix in confined:
            return confined[prefix]
        folder = (self.root / prefix).resolve()
        if not folder.is_relative_to(self.root):
            raise StorageError(f"key {key!r} resolves outside the storage root")
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        if confined is not None:
            confined[prefix] = folder
        return folder

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.put_many([(key, data)])

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Every object replaced in order (the later of two writes of a key wins): written to
        temporary files, fsynced, renamed, then each folder written into fsynced once. The
        writes all come before the fsyncs, so the filesystem flushes them together (on ext4
        the first fsync's journal commit carries the others' data: the rest cost little)."""
        for start in range(0, len(items), BATCH):
            self._put_batch(items[start : start + BATCH])

    def _put_batch(self, items: list[tuple[str, bytes]]) -> None:
        staged: list[tuple[int, str, Path]] = []  # (open fd, temporary path, target)
        confined: dict[str, Path] = {}  # a batch confines each folder once, not once per file
        key, temp_prefix = "", _temp_prefix()
        try:
            for key, data in items:
                folder = self._folder(key, confined)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix, suffix=TEMP_SUFFIX)
                staged.append((fd, tmp, folder / key.rpartition("/")[2]))
                os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the objects from readers
                _write_all(fd, data)
            for fd, _tmp, _target in staged:
                os.fsync(fd)
            folders = {target.parent for _fd, _tmp, target in staged}
            for n, (fd, tmp, target) in enumerate(staged):
                os.close(fd)
                staged[n] = (-1, tmp, target)
                os.replace(tmp, target)
                staged[n] = (-1, "", target)  # renamed: nothing left to remove
            for folder in folders:
                _fsync_folder(folder)
        except BaseException as exc:
            for fd, tmp, _target in staged:  # not renamed: never visible, removed
                if fd >= 0:
                    os.close(fd)
                if tmp:
                    Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc
            raise

    def put_file(self, key: str, source: BinaryIO) -> None:
        folder = self._folder(key)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(), suffix=TEMP_SUFFIX)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb", closefd=False) as target:
                shutil.copyfileobj(source, target, COPY_CHUNK)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, folder / key.rpartition("/")[2])
            tmp = ""
            _fsync_folder(folder)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp:
                Path(tmp).unlink(missing_ok=True)

    def copy_many(self, pairs: list[tuple[str, str]], replace: bool = False) -> None:
        """Hard links: no data is written (the source was fsynced when it was written), each
        folder linked into is fsynced once. Where links are refused (another filesystem, a
        filesystem without them) the bytes are copied."""
        folders, copied = set(), []
        confined: dict[str, Path] = {}  # folders resolved once per call (see _folder)
        try:
            for target, source in pairs:
                folder = self._folder(target, confined)
                origin = self._folder(source, confined, create=False) / source.rpartition("/")[2]
                try:
                    _link(origin, folder / target.rpartition("/")[2], replace)
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_LINKS:
                        raise
                    copied.append((target, self._path(source).read_bytes()))
                    continue
                folders.add(folder)
            for folder in folders:
                _fsync_folder(folder)
        except OSError as exc:
            raise StorageError(f"cannot copy {target}: {exc.strerror or exc}") from exc
        self.put_many(copied)

    def copy_in(self, target: str, bucket: str, key: str) -> str | None:
        return None  # a folder is not a bucket: the bytes are fetched

    def open(self, key: str) -> BinaryIO | None:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

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

    def tidy(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Remove the temporary files that writers killed mid-write left behind: those of
        processes of this machine that are gone, and any older than ``older_than_s``.
        Returns how many were removed."""
        removed, host, cutoff = 0, socket.gethostname(), time.time() - older_than_s
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
                    continue
                path = Path(dirpath, name)
                try:
                    if _writer_is_gone(name, host) or path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:
                    continue  # renamed into place or removed meanwhile, or not ours to remove
        return removed

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageError(f"storage root {self.root} is not writable")
        except OSError as exc:
            raise StorageError(f"storage root {self.root}: {exc.strerror or exc}") from exc


def _link(source: Path, target: Path, replace: bool) -> None:
    """A hard link at ``target``; with ``replace``, made beside it and renamed over it, so
    readers see the old file or the new one, never none."""
    # follow_symlinks=False: a symlink standing at the source (its folder is confined, the
    # file itself is not resolved) is linked as a symlink, never followed out of the root;
    # reading it through the storage then refuses it.
    if not replace:
        os.link(source, target, follow_symlinks=False)
        return
    temporary = target.with_name(f"{_temp_prefix()}{target.name}{TEMP_SUFFIX}")
    os.link(source, temporary, follow_symlinks=False)
    try:
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def _temp_prefix() -> str:
    """``.tmp-<host>-<pid>-``: who writes a temporary file is in its name, so the files of a
    writer that was killed can be told from those of one still writing."""
    return f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _writer_is_gone(name: str, host: str) -> bool:
    """Whether ``name`` is a temporary file of a process of ``host`` that no longer runs."""
    writer_host, _, rest = name[len(TEMP_PREFIX) :].rpartition("-")[0].rpartition("-")
    if writer_host != host or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False


def _write_all(fd: int, data: bytes) -> None:
    view, offset = memoryview(data), 0
    while offset < len(data):
        offset += os.write(fd, view[offset:])


def _fsync_folder(folder: Path) -> None:
    """Make the renames into ``folder`` durable (a rename is a change of the folder)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
