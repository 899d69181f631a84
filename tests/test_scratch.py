"""Local storage's reusable scratch files: atomic for readers, never written through, cleaned."""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sync.storage import UnsafeKeyError, open_storage
from sync.storage import scratch as scratch_module
from sync.storage.scratch import SCRATCH_DIR, SMALL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(tmp_path):
    return tmp_path / "bucket"


@pytest.fixture
def reuse_at_once(monkeypatch):
    monkeypatch.setattr(scratch_module, "REUSE_AFTER_S", 0.0)


def test_a_reader_of_the_old_file_keeps_reading_the_old_bytes(bucket):
    storage = open_storage(bucket.as_uri())
    storage.put("tasks/1.json", b"old " * 100)
    with open(bucket / "tasks/1.json", "rb") as reader:
        for n in range(50):  # many writes while the reader holds the old inode open
            storage.put_many([("tasks/1.json", b"new %d" % n), ("tasks/2.json", b"x")])
        assert reader.read() == b"old " * 100
    assert storage.get("tasks/1.json") == b"new 49"


def test_an_old_file_open_nowhere_is_reused_at_once(bucket):
    storage = open_storage(bucket.as_uri())
    storage.put("tasks/1.json", b"v1")
    first = (bucket / "tasks/1.json").stat().st_ino
    storage.put("tasks/1.json", b"v2")
    storage.put("tasks/1.json", b"v3")  # written into the file v2 exchanged out: no new file
    assert (bucket / "tasks/1.json").stat().st_ino == first
    assert storage.get("tasks/1.json") == b"v3"
    for n in range(100):
        storage.put("tasks/1.json", b"v%d" % n)
    assert len(os.listdir(bucket / SCRATCH_DIR)) <= 2


def test_an_old_file_mapped_or_open_in_another_process_keeps_its_bytes(bucket):
    storage = open_storage(bucket.as_uri())
    storage.put("tasks/1.json", b"mapped " * 100)
    with open(bucket / "tasks/1.json", "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)  # outlives its descriptor
    storage.put("tasks/2.json", b"held " * 100)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'rb'); print(1, flush=True); "
            "sys.stdin.read(); print(f.read().decode())",
            str(bucket / "tasks/2.json"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline() == "1\n"
    for n in range(50):
        storage.put_many([("tasks/1.json", b"new %d" % n), ("tasks/2.json", b"new %d" % n)])
    out, _ = reader.communicate("")
    assert out.strip() == "held " * 99 + "held"
    assert mapped[:] == b"mapped " * 100
    mapped.close()
    assert storage.get("tasks/1.json") == storage.get("tasks/2.json") == b"new 49"


def test_an_old_file_with_another_name_is_never_written_through(bucket, reuse_at_once):
    storage = open_storage(bucket.as_uri())
    storage.put("tasks/1.json", b"mine")
    other = bucket.parent / "hard-link.json"
    os.link(bucket / "tasks/1.json", other)  # someone else's name for the same file
    for n in range(5):  # the exchanged-out file would be reused here if it were safe
        storage.put_many([("tasks/1.json", b"v%d" % n), ("tasks/9.json", b"w%d" % n)])
    assert other.read_bytes() == b"mine"
    assert storage.get("tasks/1.json") == b"v4"


def test_a_symlink_put_in_place_is_replaced_and_its_target_untouched(bucket, reuse_at_once):
    storage = open_storage(bucket.as_uri())
    storage.put("tasks/1.json", b"first")
    outside = bucket.parent / "outside.json"
    outside.write_bytes(b"not ours")
    for n in range(5):
        (bucket / "tasks/1.json").unlink()
        (bucket / "tasks/1.json").symlink_to(outside)
        storage.put_many([("tasks/1.json", b"n%d" % n), ("tasks/2.json", b"m%d" % n)])
    assert outside.read_bytes() == b"not ours"
    assert storage.get("tasks/1.json") == b"n4"


def test_files_are_readable_by_others_whatever_the_umask(bucket):
    old = os.umask(0o077)
    try:
        storage = open_storage(bucket.as_uri())
        storage.put_many([("tasks/1.json", b"a"), ("tasks/2.json", b"b" * (SMALL + 1))])
    finally:
        os.umask(old)
    assert (bucket / "tasks/1.json").stat().st_mode & 0o777 == 0o644
    assert (bucket / "tasks/2.json").stat().st_mode & 0o777 == 0o644


def test_small_and_large_objects_in_one_batch_are_written_in_order(bucket):
    storage = open_storage(bucket.as_uri())
    large = b"L" * (SMALL + 10)
    storage.put_many([("a/1", b"small"), ("a/1", large), ("a/2", b"s2"), ("a/2", large)])
    assert storage.get("a/1") == large
    assert storage.get("a/2") == large
    assert sorted(os.listdir(bucket / "a")) == ["1", "2"]


def test_the_scratch_folder_is_not_listed_and_not_a_key(bucket):
    storage = open_storage(bucket.as_uri())
    storage.put_many([("tasks/1.json", b"a"), ("tasks/2.json", b"b")])
    storage.put("tasks/1.json", b"c")
    assert (bucket / SCRATCH_DIR).is_dir()
    assert sorted(storage.list()) == ["tasks/1.json", "tasks/2.json"]
    with pytest.raises(UnsafeKeyError):
        storage.put(f"{SCRATCH_DIR}/x", b"x")


def test_scratch_files_of_dead_processes_are_removed_and_own_ones_at_exit(bucket):
    folder = bucket / SCRATCH_DIR
    folder.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    (folder / f"{host},{dead},1").write_bytes(b"left by a killed worker")
    (folder / f"other-host,{dead},1").write_bytes(b"another machine's, on shared storage")
    (folder / f"{host},{os.getpid()},999").write_bytes(b"a live process's")
    script = (
        "import sys; from sync.storage import open_storage; "
        "s = open_storage(sys.argv[1]); "
        "s.put_many([(f'tasks/{n}.json', b'x') for n in range(10)]); "
        "s.put_many([(f'tasks/{n}.json', b'y') for n in range(10)])"
    )
    subprocess.run([sys.executable, "-c", script, bucket.as_uri()], cwd=ROOT, check=True)
    assert {p.name for p in folder.iterdir()} == {
        f"{host},{os.getpid()},999",
        f"other-host,{dead},1",
    }
    assert (bucket / "tasks/3.json").read_bytes() == b"y"


def test_a_folder_on_another_filesystem_inside_the_root_is_written_too(bucket):
    mount = bucket / "mounted"
    mount.mkdir(parents=True)
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)]).returncode
    ):
        pytest.skip("needs root to mount a tmpfs")
    try:
        storage = open_storage(bucket.as_uri())
        storage.put_many([("mounted/a.json", b"1"), ("mounted/b.json", b"2"), ("top.json", b"3")])
        storage.put_many([("mounted/a.json", b"4"), ("top.json", b"5")])
        assert [storage.get(k) for k in ("mounted/a.json", "mounted/b.json", "top.json")] == [
            b"4",
            b"2",
            b"5",
        ]
        assert sorted(os.listdir(mount)) == ["a.json", "b.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_a_file_of_another_owner_is_dropped_and_leases_stay_on(bucket):
    # Root may lease any file; an unprivileged worker may lease only its own. An old inode
    # another user wrote (exchanged out of the bucket) cannot be checked: it is not reused.
    pool = scratch_module.ScratchPool(bucket)
    path, fd = pool.open()
    os.close(fd)
    fd = os.open(path, os.O_WRONLY)  # root's file, open for writing before the switch
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setuid(65534)
            answer = f"{pool._open_nowhere_else(fd)} {pool._leases}"
        except BaseException as exc:
            answer = repr(exc)
        os.write(writer, answer.encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    assert os.read(reader, 200) == b"None True"
    assert pool._open_nowhere_else(fd) is True  # its owner may
    os.close(fd)
