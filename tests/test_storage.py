"""The storage interface: the same suite against the local and the S3 backend."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import boto3
import pytest

from sync.storage import StorageError, UnsafeKeyError, open_storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage((tmp_path / "bucket").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_storage(request.getfixturevalue("s3_url"), endpoint_url=endpoint)


def test_put_get_delete_list(storage):
    storage.put("tasks/1.json", b'{"id": 1}')
    storage.put("exports/1/coco/result.json", b"{}")
    assert storage.get("tasks/1.json") == b'{"id": 1}'
    assert sorted(storage.list()) == ["exports/1/coco/result.json", "tasks/1.json"]
    assert list(storage.list("tasks/")) == ["tasks/1.json"]
    storage.delete("tasks/1.json")
    storage.delete("tasks/1.json")  # idempotent
    assert storage.get("tasks/1.json") is None
    assert list(storage.list("tasks/")) == []


def test_put_many_writes_every_object_and_the_later_of_two_writes_wins(storage):
    items = [(f"tasks/{n}.json", f"task {n}".encode()) for n in range(20)]
    storage.put_many([*items, ("tasks/3.json", b"again")])
    assert sorted(storage.list("tasks/")) == sorted(key for key, _ in items)
    assert storage.get("tasks/4.json") == b"task 4"
    assert storage.get("tasks/3.json") == b"again"


def test_local_put_many_failure_leaves_no_temporary_files(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    storage.put("exports/blocked", b"a file where a folder is needed")
    items = [(f"tasks/{n}.json", b"x") for n in range(10)] + [("exports/blocked/1.txt", b"y")]
    with pytest.raises(StorageError):
        storage.put_many(items)
    leftovers = [p for p in (tmp_path / "bucket").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_local_put_many_with_an_unsafe_key_writes_nothing_and_leaves_nothing(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    with pytest.raises(UnsafeKeyError):
        storage.put_many([("tasks/1.json", b"x"), ("tasks/../../escape", b"y")])
    assert [p.name for p in (tmp_path / "bucket").rglob("*") if p.is_file()] == []
    assert not (tmp_path / "escape").exists()


def test_local_objects_are_readable_by_others(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    storage.put("tasks/1.json", b"{}")
    assert (tmp_path / "bucket/tasks/1.json").stat().st_mode & 0o777 == 0o644


def test_tidy_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    storage.put("tasks/1.json", b"{}")
    folder = tmp_path / "bucket/tasks"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    left = folder / f".tmp-{host}-{dead.pid}-x1y2.part"  # its writer is gone
    writing = folder / f".tmp-{host}-{os.getpid()}-a1b2.part"  # this process: still writing
    elsewhere = folder / ".tmp-other-host-12-c3d4.part"  # another machine's, recent
    old = folder / ".tmp-other-host-13-e5f6.part"  # another machine's, two hours old
    for path in (left, writing, elsewhere, old):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert storage.tidy() == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["1.json", writing.name, elsewhere.name]
    )
    assert list(storage.list()) == ["tasks/1.json"]


def test_digests_are_md5_of_the_content(storage):
    storage.put("tasks/7.json", b"seven")
    assert dict(storage.list_digests("tasks/")) == {
        "tasks/7.json": hashlib.md5(b"seven").hexdigest()
    }


def test_put_replaces_the_whole_object(storage):
    storage.put("tasks/1.json", b"old" * 1000)
    storage.put("tasks/1.json", b"new")
    assert storage.get("tasks/1.json") == b"new"
    assert list(storage.list()) == ["tasks/1.json"]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "tasks/../../x",
        "tasks//1.json",
        "a/./b",
        "a\\b",
        "tasks/\x00.json",
        "tasks/\n.json",
    ],
)
def test_unsafe_keys_are_refused(storage, key):
    with pytest.raises(UnsafeKeyError):
        storage.put(key, b"x")
    assert list(storage.list()) == []


def test_check_passes_when_reachable(storage):
    storage.check()


def test_local_leaves_no_temp_files(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    for n in range(20):
        storage.put("tasks/1.json", str(n).encode())
    assert os.listdir(tmp_path / "bucket" / "tasks") == ["1.json"]


def test_local_symlink_out_of_the_root_is_refused(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "link").symlink_to(outside)
    with pytest.raises(StorageError):
        storage.put("link/x.json", b"x")
    assert not (outside / "x.json").exists()


def test_local_put_replaces_a_symlinked_file_instead_of_following_it(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    storage.put("tasks/1.json", b"first")
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"not ours")
    (tmp_path / "bucket/tasks/1.json").unlink()
    (tmp_path / "bucket/tasks/1.json").symlink_to(outside)
    storage.put("tasks/1.json", b"second")
    assert outside.read_bytes() == b"not ours"
    assert not (tmp_path / "bucket/tasks/1.json").is_symlink()
    assert storage.get("tasks/1.json") == b"second"


def test_local_copy_never_follows_a_symlink_out_of_the_root(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not ours")
    storage.put("exports/1/yolo/labels/a.txt", b"ours")
    (tmp_path / "bucket/exports/1/yolo/labels/b.txt").symlink_to(outside)
    (tmp_path / "bucket/elsewhere").symlink_to(tmp_path)
    storage.copy_many(
        [("generations/1/a.txt", "exports/1/yolo/labels/a.txt"),
         ("generations/1/b.txt", "exports/1/yolo/labels/b.txt")]
    )  # fmt: skip
    assert storage.get("generations/1/a.txt") == b"ours"
    with pytest.raises(StorageError):  # the link is a symlink, and reading it is refused
        storage.get("generations/1/b.txt")
    with pytest.raises(StorageError):  # a source whose folder leads out of the root
        storage.copy_many([("generations/1/c.txt", "elsewhere/secret.txt")])
    assert outside.read_bytes() == b"not ours"
    assert not (tmp_path / "bucket/generations/1/c.txt").exists()


def test_local_put_recreates_a_folder_removed_between_writes(tmp_path):
    storage = open_storage((tmp_path / "bucket").as_uri())
    storage.put("exports/1/yolo/labels/1.txt", b"a")
    shutil.rmtree(tmp_path / "bucket/exports")
    storage.put("exports/1/yolo/labels/2.txt", b"b")
    assert storage.get("exports/1/yolo/labels/2.txt") == b"b"


def test_local_write_failure_is_a_storage_error(tmp_path):
    blocker = tmp_path / "bucket"
    blocker.write_text("a file where the root folder should be")
    storage = open_storage(blocker.as_uri())
    with pytest.raises(StorageError):
        storage.put("tasks/1.json", b"x")
    with pytest.raises(StorageError):
        storage.check()


def test_s3_keys_live_under_the_prefix_with_json_content_type(s3_endpoint, s3_url):
    storage = open_storage(s3_url, endpoint_url=s3_endpoint)
    storage.put("tasks/1.json", b"{}")
    bucket = s3_url.split("/")[2]
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(
        Bucket=bucket, Key="some/prefix/tasks/1.json"
    )
    assert head["ContentType"] == "application/json"


def test_s3_errors_are_storage_errors(s3_endpoint):
    storage = open_storage("s3://no-such-bucket-here/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError) as err:
        storage.put("tasks/1.json", b"x")
    assert "NoSuchBucket" in str(err.value)
    with pytest.raises(StorageError):
        storage.check()
    with pytest.raises(StorageError):
        list(storage.list())


def test_s3_unreachable_is_a_storage_error():
    from sync.launcher import free_port

    storage = open_storage("s3://b/x", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError):
        storage.get("tasks/1.json")


def test_unknown_scheme_is_a_storage_error():
    with pytest.raises(StorageError):
        open_storage("gopher://bucket/x")


def test_copies_keep_their_bytes_when_the_source_is_replaced(storage):
    storage.put_many([("live/a.txt", b"first"), ("objects/a1", b"first")])
    storage.copy_many([("objects/a1", "live/a.txt"), ("objects/a2", "live/a.txt")])
    storage.put("live/a.txt", b"second")  # writers replace whole: the copies keep "first"
    assert storage.get("objects/a1") == storage.get("objects/a2") == b"first"
    assert storage.get("live/a.txt") == b"second"


def test_put_file_and_open_stream_whole_objects(storage, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b",".join(b"%d" % n for n in range(200_000)) + b"]")
    with big.open("rb") as source:
        storage.put_file("snapshots/1/1.json", source)
    reader = storage.open("snapshots/1/1.json")
    with reader:
        chunks = iter(lambda: reader.read(1 << 16), b"")
        assert b"".join(chunks) == big.read_bytes()
    assert storage.open("snapshots/1/none.json") is None
