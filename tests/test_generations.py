"""Pinned generations: captured as the exports change, pulled byte for byte later, diffed,
expired by retention, and refused when the bucket does not hold what the manifest names."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson
import pytest
from conftest import Receiver, make_settings, run_worker
from test_incremental import PROJECT, _annotation, _send, _tasks_created

from sync import cli, generations, materialise
from sync.runtime import Runtime, set_runtime

TOKEN = "generations-token"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def rt(request, tmp_path, database_url, redis_url):
    overrides = {"api_token": TOKEN}
    if request.param == "s3":
        s3_url = request.getfixturevalue("s3_url")
        overrides |= {
            "storage_url": s3_url,
            "s3_endpoint_url": request.getfixturevalue("s3_endpoint"),
        }
    runtime = Runtime(make_settings(tmp_path, database_url, redis_url, **overrides))
    set_runtime(runtime)
    yield runtime
    set_runtime(None)


def _project_files(rt: Runtime) -> dict[str, bytes]:
    """What the live bucket holds for project 1: its task files and its exports."""
    doc_ids = {f"tasks/{n}.json" for n in range(1, 100)}
    keys = [k for k in rt.storage.list("") if k in doc_ids or k.startswith("exports/1/")]
    return {key: rt.storage.get(key) for key in keys}


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "generation.json"
    }


def _cli(monkeypatch, rt: Runtime, *args: str) -> int:
    monkeypatch.setenv("ANNOSYNC_STORAGE_URL", rt.settings.storage_url)
    if rt.settings.s3_endpoint_url:
        monkeypatch.setenv("ANNOSYNC_S3_ENDPOINT_URL", rt.settings.s3_endpoint_url)
    return cli.main(list(args))


def _label(rt: Runtime, stamp: int, task_id: int = 1, label: str = "Car") -> None:
    _send(rt, _annotation(100 + task_id, task_id, [("box", label, stamp % 80, 10)], stamp))
    run_worker(rt)


def test_a_generation_is_pulled_byte_for_byte_after_later_changes(
    rt, tmp_path, monkeypatch, capsys
):
    _send(rt, _tasks_created(range(1, 7)))
    run_worker(rt)
    _label(rt, 1)
    first = materialise.read_index(rt.storage, 1)[-1]
    announced = _project_files(rt)
    assert first["counts"]["tasks"] == 6

    for stamp in range(2, 8):  # later changes: new generations, old one untouched
        _label(rt, stamp, task_id=1 + stamp % 3, label="Truck")
    _send(rt, {"action": "TASKS_DELETED", "tasks": [{"id": 6}], "project": PROJECT})
    run_worker(rt)
    latest = materialise.read_index(rt.storage, 1)[-1]
    assert latest["generation"] > first["generation"]

    out = tmp_path / "pulled"
    code = _cli(monkeypatch, rt, "pull", "--project", "1", "--generation",
                str(first["generation"]), "--to", str(out))  # fmt: skip
    assert code == 0
    assert _tree(out) == announced  # exactly what the generation named, not today's bucket
    manifest = orjson.loads((out / "generation.json").read_bytes())
    for entry in manifest["files"]:
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]

    assert _cli(monkeypatch, rt, "pull", "--project", "1", "--to", str(tmp_path / "now")) == 0
    assert _tree(tmp_path / "now") == _project_files(rt)

    only = tmp_path / "yolo"
    assert (
        _cli(monkeypatch, rt, "pull", "--project", "1", "--format", "yolo", "--to", str(only)) == 0
    )
    assert {p.split("/")[2] for p in _tree(only)} == {"yolo"}

    capsys.readouterr()
    assert _cli(monkeypatch, rt, "generations", "diff", "--project", "1", "--json",
                str(first["generation"]), str(latest["generation"])) == 0  # fmt: skip
    diff = orjson.loads(capsys.readouterr().out)
    changed = {t for split in diff["tasks"].values() for t in split["changed"]}
    deleted = {t for split in diff["tasks"].values() for t in split["deleted"]}
    assert changed == {1, 2, 3} and deleted == {6}
    assert diff["files"]["changed"] >= 1  # the aggregates


def test_retention_expires_old_generations_and_their_objects(
    tmp_path, sqlite_url, redis_url, monkeypatch, capsys
):
    monkeypatch.setattr(generations, "GARBAGE_EVERY", 1)  # collect at every generation
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, generations_keep=2))
    set_runtime(rt)
    _send(rt, _tasks_created(range(1, 4)))
    run_worker(rt)
    for stamp in range(1, 6):
        _label(rt, stamp, label=["Car", "Truck"][stamp % 2])
    kept = materialise.read_index(rt.storage, 1)
    assert len(kept) == 2
    oldest = kept[0]["generation"] - 1
    code = _cli(monkeypatch, rt, "pull", "--project", "1", "--generation", str(oldest),
                "--to", str(tmp_path / "old"))  # fmt: skip
    assert code == 2
    assert "has expired" in capsys.readouterr().err
    assert not (tmp_path / "old").exists()
    named = set()
    for entry in kept:
        manifest = generations.read_manifest(rt.storage, 1, entry["generation"], entry["sha256"])
        named |= {f["sha256"] for f in manifest["files"]}
    stored = {k.rsplit("/", 1)[1] for k in rt.storage.list("generations/1/objects/")}
    assert stored == named  # nothing a retained generation needs is gone, nothing else stays
    assert not rt.storage.get(generations.manifest_key(1, oldest))
    set_runtime(None)


def test_a_pull_refuses_bytes_that_do_not_match_and_writes_nothing(
    tmp_path, sqlite_url, redis_url, monkeypatch, capsys
):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    _send(rt, _tasks_created(range(1, 3)))
    run_worker(rt)
    listed = materialise.read_index(rt.storage, 1)[-1]
    manifest = generations.read_manifest(rt.storage, 1, listed["generation"], listed["sha256"])
    victim = manifest["files"][0]
    rt.storage.put(generations.object_key(1, victim["sha256"]), b"tampered")
    out = tmp_path / "pulled"
    assert _cli(monkeypatch, rt, "pull", "--project", "1", "--to", str(out)) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".pulled.partial-*"))
    set_runtime(None)


def test_the_http_api_lists_serves_and_zips_generations(tmp_path, sqlite_url, redis_url):
    rt = Runtime(
        make_settings(tmp_path, sqlite_url, redis_url, api_token=TOKEN, generations_keep=1)
    )
    set_runtime(rt)
    receiver = Receiver(rt)
    try:
        _send(rt, _tasks_created(range(1, 4)))
        run_worker(rt)
        _label(rt, 1)
        auth = {"Authorization": f"Token {TOKEN}"}
        listed = receiver.get("/api/projects/1/generations", headers=auth).json()
        latest = listed["generations"][-1]
        assert len(listed["generations"]) == 1
        found = receiver.get(f"/api/projects/1/generations/{latest['generation']}", headers=auth)
        assert found.json()["generation"] == latest["generation"]
        zips = [
            receiver.get("/api/projects/1/generations/latest/download?format=YOLO", headers=auth)
            for _ in range(2)
        ]
        assert zips[0].status_code == 200 and zips[0].content == zips[1].content
        names = zipfile.ZipFile(io.BytesIO(zips[0].content)).namelist()
        assert "exports/1/yolo/classes.txt" in names and "generation.json" in names
        assert all(n.startswith("exports/1/yolo/") for n in names if n != "generation.json")
        gone = receiver.get(f"/api/projects/1/generations/{latest['generation'] - 1}", headers=auth)
        assert gone.status_code == 410 and gone.json()["error"] == "generation_expired"
        unknown = receiver.get("/api/projects/1/generations/999", headers=auth)
        assert unknown.status_code == 404
        for bad in ("abc", "0", "-1", "1.5", "99999999999"):
            refused = receiver.get(f"/api/projects/1/generations/{bad}/download", headers=auth)
            assert refused.status_code == 400, bad
            assert refused.json()["detail"][0]["path"] == "generation"
        assert receiver.get("/api/projects/1/generations").status_code == 401
    finally:
        receiver.close()
        set_runtime(None)


def test_pull_is_a_command_a_ci_job_runs(tmp_path, sqlite_url, redis_url):
    """The installed command, with nothing but the storage URL in its environment."""
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    _send(rt, _tasks_created(range(1, 3)))
    run_worker(rt)
    set_runtime(None)
    env = {"PATH": "/usr/bin:/bin", "ANNOSYNC_STORAGE_URL": rt.settings.storage_url,
           "ANNOSYNC_DATA_DIR": str(tmp_path / "elsewhere")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "sync.cli", "pull", "--project", "1", "--to", str(tmp_path / "ci")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "every sha256 verified" in run.stdout
    assert (tmp_path / "ci" / "tasks" / "1.json").exists()
    assert not (tmp_path / "elsewhere").exists()  # no database was created for a pull
