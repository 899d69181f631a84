"""`annosync up` as a user runs it: a subprocess on a free port with a temp data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import delivery

from config.settings import load_settings
from sync.launcher import free_port

pytestmark = pytest.mark.e2e


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def annosync_up(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    lines = []

    def ready():
        try:
            return requests.get(base + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        while "annosync is up" not in (line := proc.stdout.readline()):  # what a user waits for
            assert line, f"up exited before it was up: {''.join(lines)}"
            lines.append(line)
        lines.append(line)
        _wait_for(ready, 30, "annosync up to be ready")
        proc.printed = lines
        yield base, data_dir, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def test_up_applies_a_captured_delivery_and_refuses_strangers(annosync_up):
    base, data_dir, _proc = annosync_up
    secret = (data_dir / "webhook-secret").read_text().strip()
    body = json.dumps(delivery("03-ANNOTATION_CREATED"))
    headers = {"Content-Type": "application/json"}

    stranger = requests.post(base + "/webhooks/label-studio/1", data=body, headers=headers)
    assert stranger.status_code == 401

    sent = time.monotonic()
    answer = requests.post(
        base + "/webhooks/label-studio/1",
        data=body,
        headers={**headers, "Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 202
    target = data_dir / "bucket" / "tasks" / "1.json"
    _wait_for(target.exists, 10, "tasks/1.json")
    assert time.monotonic() - sent < 5
    doc = json.loads(target.read_text())
    assert [a["id"] for a in doc["annotations"]] == [1]
    status = subprocess.run(
        [sys.executable, "-m", "sync.cli", "deliveries", "list"],
        env={**os.environ, "ANNOSYNC_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout.count("ANNOTATION_CREATED") == 1  # the stranger's was not recorded
    # Every command on the same folder reaches the same instance (its private Redis too),
    # with nothing but the folder: the environment a user has in another terminal.
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    for argv in (["status", "--project", "1"], ["resync", "--project", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "sync.cli", *argv],
            env={**plain, "ANNOSYNC_DATA_DIR": str(data_dir)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert "project 1: written 0, deleted 0" in done.stdout
    private = json.loads((data_dir / "instance.json").read_text())["redis_url"]
    assert private != "redis://127.0.0.1:6379/0"  # up's own redis-server, found by the folder
    assert load_settings({"ANNOSYNC_DATA_DIR": str(data_dir)}).redis_url == private


def test_commands_on_a_folder_without_an_instance_say_so_and_create_nothing(tmp_path):
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "sync.cli", "status"],
        env={**plain, "ANNOSYNC_DATA_DIR": str(tmp_path / "nothing")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("annosync: no annosync database at ")
    assert not (tmp_path / "nothing" / "annosync.db").exists()


def test_a_second_up_on_the_same_folder_is_refused(annosync_up):
    _base, data_dir, _proc = annosync_up
    assert (data_dir / "bucket").is_dir()  # the bucket folder exists from the start
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    second = subprocess.run(
        [sys.executable, "-m", "sync.cli", "up", "--port", str(free_port()),
         "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"annosync: annosync is already up on {data_dir.resolve()}; stop it first"
    ]


def test_up_stops_cleanly_on_ctrl_c(annosync_up):
    base, data_dir, proc = annosync_up
    proc.send_signal(signal.SIGINT)
    proc.wait(20)
    output = "".join(proc.printed) + proc.stdout.read()  # what it had printed, then the rest
    assert proc.returncode == 0
    assert "/webhooks/label-studio/" in output
    assert "Authorization: Bearer" in output
    assert output.rstrip().endswith("annosync stopped.")
    assert not (Path(data_dir) / "instance.json").exists()  # nothing points at a dead Redis
    assert "Traceback" not in output
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/healthz", timeout=1)
    assert not list(Path(data_dir).glob("bucket/tasks/.tmp-*"))


def test_up_without_redis_says_how_to_install_it(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no redis-server on this PATH
    result = subprocess.run(
        [sys.executable, "-m", "sync.cli", "up", "--data-dir", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "annosync: redis-server is not installed: install it (sudo apt-get install "
        "redis-server) or set REDIS_URL to a running Redis"
    ]


def _up(tmp_path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    return subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "up", "--data-dir", str(tmp_path / "d"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,
    )


def test_up_says_it_is_up_only_once_the_receiver_listens(tmp_path):
    port = free_port()
    proc = _up(tmp_path, "--port", str(port))
    try:
        line = ""
        while "annosync is up" not in line:
            line = proc.stdout.readline()
            assert line, "up exited before it was up"
        # Said only once listening: the very next request is answered.
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


@pytest.mark.parametrize("port", ["99999", "0", "http", "-1"])
def test_a_port_out_of_range_is_one_line_and_exit_2(tmp_path, port):
    proc = _up(tmp_path, "--port", port)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "1 to 65535" in err, err


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _up(tmp_path, "--port", str(port))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "is up" not in out
    assert err.strip().splitlines() == [
        f"annosync: port {port} on 127.0.0.1 is already in use; choose --port"
    ]


def test_serve_with_the_port_taken_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "handlers.serve", "--port", str(port)],
            env={**os.environ, "ANNOSYNC_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"annosync: port {port} on 127.0.0.1 is already in use (another process listens there)"
    ]


REPO = Path(__file__).resolve().parents[1]


def _readme_blocks(heading: str) -> list[str]:
    """The fenced blocks of the README's section ``heading``."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```")[1::2]]


def _commands(block: str) -> list[str]:
    """Shell commands of a block (a line ending in a backslash continues)."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_readme_quick_start_does_what_it_says(tmp_path):
    """The README's quick start, run as written in a fresh folder: the same commands (the
    port made free, the repository's paths made absolute), the answers and files it shows."""
    assert json.loads((REPO / "docs/examples/annotation-created.json").read_text()) == delivery(
        "03-ANNOTATION_CREATED"
    )
    commands, files = _readme_blocks("Quick start")
    port = free_port()

    def as_run_here(command: str) -> str:
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        command = command.replace("@docs/", f"@{REPO}/docs/")
        return command.replace("scripts/run ", f"{REPO}/scripts/run ")

    plain = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOSYNC_", "REDIS_URL"))}
    up = subprocess.Popen(
        [str(REPO / "scripts/run"), "up", "--port", str(port)], cwd=tmp_path, env=plain,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        while "annosync is up" not in (line := up.stdout.readline()):
            assert line, "up exited before it was up"
        curl, status = _commands(commands)
        sent = subprocess.run(as_run_here(curl), shell=True, cwd=tmp_path, env=plain,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert sent.stdout.strip() == '{"delivery_id":1,"status":"queued"}'
        label = tmp_path / "annosync-data/bucket/exports/1/yolo/labels/1__1.txt"
        _wait_for(label.exists, 5, "the YOLO label")  # "within a second", with slack
        while "project 1: deliveries applied 1, task files written 1" not in line:
            line = up.stdout.readline()  # the log line the README quotes
            assert line, "up exited"
        shown = subprocess.run(as_run_here(status), shell=True, cwd=tmp_path, env=plain,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        row = shown.stdout.splitlines()[1].split()
        assert row[:3] == ["1", "1", "1"]  # project 1: 1 task, 1 annotation
        # Every file the README lists is there (the aggregates follow a 0.5 s debounce).
        listed = [line.split()[0] for line in files.splitlines() if line.startswith("annosync")]
        _wait_for(lambda: all((tmp_path / p).is_file() for p in listed), 5, str(listed))
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(20)
    # The label file holds the lines the README shows.
    shown_lines = [" ".join(line.split()[-5:]) for line in files.splitlines() if "0." in line]
    assert label.read_text().splitlines() == shown_lines
    assert (label.parent.parent / "classes.txt").read_text().split() == ["Airplane", "Car"]
