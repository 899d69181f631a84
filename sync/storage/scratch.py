"""Reusable scratch files for local writes, and the two Linux calls that make them pay.

Replacing a file atomically means writing a temporary file and renaming it over the target.
Measured on this project's ext4 machines, *creating* that temporary file is most of a write
(~480 µs of CPU, against ~3 µs to open an existing one), and an ``fsync`` per file is most
of the rest. So a process keeps its temporary files in one hidden folder of the storage root
(``.annosync-tmp``) and reuses them: the new content is written into a scratch file, made
durable (one ``syncfs`` for a batch), then *exchanged* with the target
(``renameat2(RENAME_EXCHANGE)``, atomic like a rename). The scratch name then holds the old
inode, which a later write reuses. Where exchange is not supported the scratch file is
renamed over the target as usual (and a new one is created next time).

A reader that opened the target before the exchange keeps reading the old inode, as after a
rename; so an old inode is reused only when no process has it open: the kernel grants a write
lease (``F_SETLEASE``) only on a file without any other open descriptor or mapping, and the
check costs ~6 µs. In a burst that rewrites the same tasks every second, this is what keeps
writes from creating files (measured here: 55 % of a draining worker's time was creating
them while old inodes waited out a fixed delay). Where leases are not available, an old inode
is reused only ``REUSE_AFTER_S`` later, and only small objects go through the pool
(``SMALL``): a reader would have to hold a small file open that long to see it change.

Scratch files are named ``<host>,<pid>,<n>``: a process removes its own at exit, and the
files of processes of this host that are gone when a storage is opened.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import os
import signal
import socket
import stat
import threading
import time
from collections import deque
from pathlib import Path

SCRATCH_DIR = ".annosync-tmp"
SMALL = 256 * 1024
REUSE_AFTER_S = 10.0
MAX_FREE = 10_000
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}  # EXDEV: the caller copies

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _syncfs = _libc.syncfs
    _syncfs.argtypes = [ctypes.c_int]
except (AttributeError, OSError):  # not Linux/glibc: rename and fsync each file instead
    _renameat2 = _syncfs = None


def exchange(source: Path, target: Path) -> bool:
    """Swap two existing paths atomically; False when this system or filesystem cannot."""
    if _renameat2 is None:
        return False
    paths = os.fsencode(source), os.fsencode(target)
    if _renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(target))


def make_durable(fds: list[int]) -> None:
    """Flush the data of every open file to disk: one ``syncfs`` for several files (it
    flushes their whole filesystem once, far cheaper here than an fsync each)."""
    if len(fds) >= 4 and _syncfs is not None and _syncfs(fds[0]) == 0:
        return
    for fd in fds:
        os.fdatasync(fd)


class ScratchPool:
    """The scratch files of this process under ``root/.annosync-tmp``."""

    def __init__(self, root: Path) -> None:
        self.folder = root / SCRATCH_DIR
        self._host = socket.gethostname()
        self._owner = 0
        self._ready: list[Path] = []  # never published: reusable at once
        self._aging: deque[tuple[float, Path]] = deque()  # (reusable from, path), oldest first
        self._count = 0
        self._leases = True  # until the kernel refuses one
        self._lock = threading.Lock()

    def open(self) -> tuple[Path, int]:
        """A scratch file opened for writing (its content is to be overwritten)."""
        with self._lock:
            self._adopt()
            return self._open()

    def _open(self) -> tuple[Path, int]:
        while item := self._reusable():
            path, checked = item
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                path.unlink(missing_ok=True)
                continue
            if not _is_private_file(fd):  # an exchanged-in link or special file: never
                os.close(fd)  # write through it
                path.unlink(missing_ok=True)
                continue
            free = checked or self._open_nowhere_else(fd)
            if free:
                os.fchmod(fd, 0o644)  # an exchanged-out file keeps its own mode: not ours
                return path, fd
            os.close(fd)
            if free is None:  # someone else's file (no lease for us): never reused
                path.unlink(missing_ok=True)
                continue
            # A reader still has it: wait a full delay, write a new file now.
            self._aging.append((time.monotonic() + REUSE_AFTER_S, path))
            break
        self._count += 1
        path = self.folder / f"{self._host},{os.getpid()},{self._count}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the folder was removed
            self.folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        os.fchmod(fd, 0o644)  # not narrowed by the umask: as readable as a file put in place
        return path, fd

    def _open_nowhere_else(self, fd: int) -> bool | None:
        """Whether no other descriptor or mapping (of any process) has ``fd``'s file open:
        a write lease is granted only then. It is given back at once. None: the file is
        someone else's, so no lease can tell (an exchanged-out file another user wrote)."""
        if not hasattr(fcntl, "F_SETLEASE"):  # not Linux
            self._leases = False
            return False
        try:
            # A lease break (someone opening the file meanwhile) signals the holder, SIGIO by
            # default, which would kill this process: ask for a signal ignored by default.
            fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):  # a lease needs the file's owner
                return None
            if exc.errno not in (errno.EAGAIN, errno.EBUSY):  # not "open elsewhere": this
                self._leases = False  # filesystem has no leases at all
            return False
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True

    def give_back(self, path: Path, published: bool) -> None:
        """``path`` (a scratch name that still exists) may be reused: at once, or, when it
        holds an inode that was ``published`` (readers may have it open), a while later."""
        with self._lock:
            self._give_back(path, published)

    def _give_back(self, path: Path, published: bool) -> None:
        if not published:
            self._ready.append(path)
            return
        self._aging.append((time.monotonic() + REUSE_AFTER_S, path))
        if len(self._aging) > MAX_FREE:
            self._aging.popleft()[1].unlink(missing_ok=True)

    def _reusable(self) -> tuple[Path, bool] | None:
        """A scratch file to reuse, and whether it is known to be open nowhere else (never
        published, or published ``REUSE_AFTER_S`` ago where leases cannot tell)."""
        if self._ready:
            return self._ready.pop(), True
        if not self._aging:
            return None
        if self._leases:
            return self._aging.popleft()[1], False
        if self._aging[0][0] <= time.monotonic():
            return self._aging.popleft()[1], True
        return None

    def _adopt(self) -> None:
        """Start this process's pool (after a fork too) and clear the dead ones'."""
        if self._owner == os.getpid():
            return
        self._owner, self._ready, self._aging, self._count = os.getpid(), [], deque(), 0
        self._leases = True
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_stale()
        atexit.register(self._remove_own, os.getpid())

    def _remove_stale(self) -> None:
        for entry in os.scandir(self.folder):
            pid = _pid_of(entry.name, self._host)
            if pid is not None and not _alive(pid):
                Path(entry.path).unlink(missing_ok=True)

    def _remove_own(self, pid: int) -> None:
        if os.getpid() != pid:  # a forked child exiting: the files are its parent's
            return
        for entry in os.scandir(self.folder) if self.folder.is_dir() else ():
            if _pid_of(entry.name, self._host) == pid:
                Path(entry.path).unlink(missing_ok=True)


def _is_private_file(fd: int) -> bool:
    info = os.fstat(fd)
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1


def _pid_of(name: str, host: str) -> int | None:
    """The pid in a scratch file name of this host (None for other hosts' or other names)."""
    parts = name.split(",")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return None
    return int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
