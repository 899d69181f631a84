"""The command line's answers to a user's mistakes: one line, exit 2, nothing left behind."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import SECRET, delivery, make_settings, run_worker
from test_incremental import _send, _tasks_created

from sync import cli
from sync.runtime import Runtime, set_runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance(tmp_path, sqlite_url, redis_url, monkeypatch):
    for key, value in {
        "ANNOSYNC_DATA_DIR": str(tmp_path / "data"),
        "ANNOSYNC_DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "ANNOSYNC_WEBHOOK_SECRET": SECRET,
        "ANNOSYNC_MEDIA": "0",
    }.items():
        monkeypatch.setenv(key, value)
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    _send(rt, _tasks_created([1, 2]))
    run_worker(rt)
    yield rt
    set_runtime(None)


@pytest.mark.parametrize(
    "argv",
    [["rebuild", "--project", "42"], ["resync", "--project", "42"], ["status", "--project", "42"]],
)
def test_an_unknown_project_is_a_usage_error_and_nothing_is_made(instance, capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "annosync: no project 42: annosync has received nothing of it\n"
    assert not [key for key in instance.storage.list("exports/") if key.startswith("exports/42")]
    assert cli.main(["status"]) == 0
    assert "42" not in capsys.readouterr().out.split()


def test_resync_from_label_studio_without_its_settings_is_a_usage_error(instance, capsys):
    assert cli.main(["resync", "--project", "1", "--from-labelstudio"]) == 2
    assert "needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in capsys.readouterr().err


def test_a_known_project_still_rebuilds(instance, capsys):
    assert cli.main(["rebuild", "--project", "1"]) == 0
    assert "project 1: 2 tasks rendered" in capsys.readouterr().out


def test_scripts_run_resolves_relative_paths_against_the_callers_folder(tmp_path):
    """`scripts/run` prepares the environment in the repository but runs where it was called
    (it used to run in the repository, so `--data-dir d` or `convert x.json` meant its files)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "export.json").write_bytes(orjson.dumps([{"id": 1, "data": {"t": "x"}}]))
    run = subprocess.run(
        [str(ROOT / "scripts/run"), "convert", "in/export.json", "-f", "JSON", "-o", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "result.json").exists()
    assert not (ROOT / "out").exists()


def test_a_worker_logs_a_line_per_drain(tmp_path, sqlite_url, redis_url, caplog):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url))
    set_runtime(rt)
    try:
        with caplog.at_level(logging.INFO, logger="annosync.jobs"):
            _send(rt, _tasks_created([1, 2, 3]))
            run_worker(rt)
        lines = [r.getMessage() for r in caplog.records if "deliveries applied" in r.getMessage()]
        assert len(lines) == 1
        assert re.fullmatch(
            r"project 1: deliveries applied 1, task files written 3, \d+ ms", lines[0]
        )
    finally:
        set_runtime(None)


def test_convert_of_a_bucket_refuses_mixed_projects_and_takes_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANNOSYNC_DATA_DIR", str(tmp_path / "data"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for task_id, project, data in [(1, 1, {"image": "a.jpg"}), (2, 2, {"text": "hello"})]:
        doc = {"id": task_id, "project": project, "data": data, "annotations": []}
        (tasks / f"{task_id}.json").write_bytes(orjson.dumps(doc))
    out = tmp_path / "out"
    assert cli.main(["convert", str(tasks), "-f", "JSON_MIN", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "annosync: the input mixes projects 1 and 2: choose one with --project\n"
    assert not out.exists()
    argv = ["convert", str(tasks), "-f", "JSON_MIN", "-o", str(out), "--project", "2"]
    assert cli.main(argv) == 0
    assert "1 task converted" in capsys.readouterr().out
    assert orjson.loads((out / "result.json").read_bytes())[0]["id"] == 2


def test_help_imports_nothing_heavy():
    """`annosync --help` and usage errors parse only: no database, queue or cloud library is
    imported before a command runs (they cost ~1.2 s: --help now takes ~40 ms)."""
    run = "try:\n    cli.build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass"
    heavy = ("sqlalchemy", "redis", "rq", "boto3", "flask", "orjson", "jsonschema")
    assert _loaded_after(run, heavy) == "[]"


def test_convert_loads_no_database_queue_or_web_library(tmp_path):
    """A YOLO conversion runs in a process that never imports SQLAlchemy, Redis, RQ, Alembic
    or Flask (they are what made every command take over a second to start)."""
    source = tmp_path / "export.json"
    task = delivery("03-ANNOTATION_CREATED")["task"]
    source.write_bytes(orjson.dumps([{**task, "annotations": []}]))
    argv = ["convert", str(source), "-f", "YOLO", "-o", str(tmp_path / "out")]
    run = f"assert cli.main({argv!r}) == 0"
    heavy = ("sqlalchemy", "redis", "rq", "alembic", "flask", "waitress")
    assert _loaded_after(run, heavy) == "[]"


def _loaded_after(code: str, modules: tuple[str, ...]) -> str:
    """Which of ``modules`` a fresh interpreter has imported after running ``code`` (with
    ``cli`` imported), as printed: ``[]`` for none."""
    probe = f"import sys; from sync import cli\n{code}\n"
    probe += f"print(sorted(m for m in {modules!r} if m in sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip().splitlines()[-1]


def test_json_logs_are_one_redacted_object_per_line():
    probe = (
        "import logging; from sync.logs import configure_logging\n"
        "configure_logging('info', ('s3cr3t-value',), 'json')\n"
        "logging.getLogger('annosync.jobs').warning('sent with s3cr3t-value to %s', 'x')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    logging.getLogger('annosync.jobs').exception('failed')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    first, second = (orjson.loads(line) for line in run.stderr.splitlines() if line)
    assert first["message"] == "sent with *** to x"
    assert (first["level"], first["logger"]) == ("warning", "annosync.jobs")
    assert first["time"].endswith("+00:00")
    assert "ZeroDivisionError" in second["error"]


def _targets(parser) -> list[str]:
    found = []
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) and action.choices.values()) or []:
            if isinstance(sub, type(parser)) or hasattr(sub, "_actions"):
                target = sub.get_default("command_target")
                found += [target] if target else _targets(sub)
    return found


def test_every_command_names_a_function_that_exists():
    targets = _targets(cli.build_parser())
    assert len(targets) == 18  # up, serve, worker, db upgrade, deliveries x2, status, resync,
    # convert, rebuild, settings, check, connect, generations list/diff, pull, triggers x2
    for target in targets:
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(f"sync.{module}"), name)), target


def test_settings_prints_the_table(capsys):
    assert cli.main(["settings"]) == 0
    assert "| `ANNOSYNC_LOG_FORMAT` |" in capsys.readouterr().out
