"""Limits on label configs and annotations: refused at the receiver with the field named,
and again at the worker for what arrives by other ways (pulls, limits lowered since)."""

from __future__ import annotations

import copy
import time

import orjson
import pytest
from conftest import Receiver, bucket, delivery, make_settings, run_worker, task_file
from lsfake import FakeLabelStudio
from sqlalchemy import select

from sync import status, store
from sync.exporters.classes import config_classes
from sync.labelconfig import parse_label_config
from sync.limits import Limits, config_issues
from sync.models import Delivery, Project
from sync.runtime import Runtime, set_runtime

IMAGE_CONFIG = delivery("15-PROJECT_UPDATED")["project"]["label_config"]


def _config(labels: list[str], category: dict[str, str] | None = None) -> str:
    category = category or {}
    items = "".join(
        f'<Label value="{v}"' + (f' category="{category[v]}"' if v in category else "") + "/>"
        for v in labels
    )
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="bbox" toName="image">{items}</RectangleLabels></View>'
    )


def _with_config(name: str, config: str) -> dict:
    body = delivery(name)
    body["project"] = {**body["project"], "label_config": config}
    return body


def _detail(answer) -> dict:
    assert answer.status_code == 400, answer.text
    return answer.json()["detail"][0]


def test_a_category_bomb_is_refused_at_the_receiver_naming_the_field(receiver, runtime):
    bomb = _config(["Car"], {"Car": "1000000"})  # 150 bytes asking for a million classes
    answer = receiver.post(_with_config("03-ANNOTATION_CREATED", bomb))
    detail = _detail(answer)
    assert detail["path"] == "project.label_config" and detail["rule"] == "category"
    assert "from 0 to 9999" in detail["message"] and "ANNOSYNC_MAX_LABELS" in detail["message"]
    with runtime.sessions() as session:
        assert session.scalar(select(Delivery.status)) == "rejected"  # kept, replayable


@pytest.mark.parametrize(
    ("labels", "rule"),
    [([f"L{n}" for n in range(10_001)], "maxLabels"), (["x" * 257], "maxLabelLength")],
)
def test_configs_over_the_limits_are_refused(receiver, labels, rule):
    detail = _detail(receiver.post(_with_config("15-PROJECT_UPDATED", _config(labels))))
    assert (detail["path"], detail["rule"]) == ("project.label_config", rule)


def test_a_category_python_cannot_read_as_a_number_is_ignored(receiver):
    # "²".isdigit() is True, int("²") raises: this config answered 500 once.
    config = _config(["Car", "Bus"], {"Car": "²", "Bus": "1"})
    assert receiver.post(_with_config("15-PROJECT_UPDATED", config)).status_code == 202
    assert config_classes(parse_label_config(config)) == ["Car", "Bus"]


def test_a_config_that_is_not_xml_is_refused(receiver):
    detail = _detail(receiver.post(_with_config("15-PROJECT_UPDATED", "<View><Image")))
    assert (detail["path"], detail["rule"]) == ("project.label_config", "labelConfig")


def test_a_config_at_the_label_limit_is_applied_and_exported(receiver, runtime):
    labels = [f"class{n:05d}" for n in range(10_000)]
    assert receiver.post(_with_config("15-PROJECT_UPDATED", _config(labels))).status_code == 202
    created = _with_config("01-TASKS_CREATED", _config(labels))
    assert receiver.post(created).status_code == 202
    run_worker(runtime)
    classes = (bucket(runtime) / "exports/1/yolo/classes.txt").read_text().splitlines()
    assert classes == labels


def test_class_placement_is_linear_in_the_labels():
    # 10,000 labels with categories in reverse: the quadratic placement took seconds here.
    labels = [f"c{n}" for n in range(10_000)]
    parsed = parse_label_config(_config(labels, {v: str(9_999 - n) for n, v in enumerate(labels)}))
    started = time.perf_counter()
    classes = config_classes(parsed)
    assert classes == labels[::-1]
    assert time.perf_counter() - started < 0.5


def test_xml_entity_expansion_is_refused():
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">'
            for n in range(1, 10)
        )
        + ']><View><Text name="t" value="&lol9;"/></View>'
    )
    issues = config_issues(laughs, Limits())
    assert issues and issues[0].rule == "labelConfig"


@pytest.mark.parametrize(
    ("change", "path", "rule"),
    [
        (
            lambda r: r[0]["value"].update(rectanglelabels=["y" * 300]),
            "annotation.result[0].value.rectanglelabels[0]",
            "maxLabelLength",
        ),
        (lambda r: r.extend(copy.deepcopy(r[:1]) * 10), "annotation.result", "maxRegions"),
        (
            lambda r: r.append(
                {
                    "type": "polygonlabels",
                    "value": {"points": [[1, 1]] * 11, "polygonlabels": ["Car"]},
                }
            ),
            "annotation.result[2].value.points",
            "maxPoints",
        ),
    ],
)
def test_annotations_over_the_limits_are_refused(
    tmp_path, sqlite_url, redis_url, change, path, rule
):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, max_regions=10, max_points=10))
    body = delivery("03-ANNOTATION_CREATED")
    change(body["annotation"]["result"])
    r = Receiver(rt)
    try:
        detail = _detail(r.post(body))
    finally:
        r.close()
    assert (detail["path"], detail["rule"]) == (path, rule)


# -- At the worker: what a pull brings in -------------------------------------------------


def _pulling_runtime(tmp_path, database_url, redis_url, fake, **limits) -> Runtime:
    return Runtime(
        make_settings(
            tmp_path,
            database_url,
            redis_url,
            label_studio_url=fake.url,
            label_studio_api_key="ls-token",
            api_token="api-token",
            **limits,
        )
    )


STAMP = "2026-01-01T00:00:00Z"


def _signal(receiver, action: str) -> None:
    """A payload-less delivery (send_payload=false): the worker pulls the project."""
    answer = receiver.post({"action": action}, path="/webhooks/label-studio/1")
    assert answer.status_code == 202, answer.text


def _pull(rt: Runtime, fake: FakeLabelStudio, action: str) -> None:
    """Signal ``action`` without payload, let the worker pull, and stop the fake."""
    r = Receiver(rt)
    try:
        _signal(r, action)
        run_worker(rt)
    finally:
        r.close()
        fake.close()


def _task(task_id: int, labels: list[str], image: str | None = None) -> dict:
    result = [
        {
            "id": f"r{n}",
            "from_name": "bbox",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 100,
            "original_height": 100,
            "value": {"x": 10, "y": 10, "width": 5, "height": 5, "rectanglelabels": [label]},
        }
        for n, label in enumerate(labels)
    ]
    return {
        "id": task_id,
        "data": {"image": image or f"http://example.com/{task_id}.jpg"},
        "annotations": [
            {"id": task_id * 10, "result": result, "created_at": "2026-01-01T00:00:00Z"}
        ],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def test_a_pulled_bomb_config_is_refused_and_the_tasks_still_sync(
    tmp_path, database_url, redis_url
):
    project = {**delivery("15-PROJECT_UPDATED")["project"]}
    project["label_config"] = _config(["Car"], {"Car": "1000000"})
    fake = FakeLabelStudio("ls-token", {1: project}, {1: [_task(1, ["Car"])]})
    rt = _pulling_runtime(tmp_path, database_url, redis_url, fake)
    _pull(rt, fake, "PROJECT_UPDATED")
    assert task_file(rt, 1)["annotations"][0]["id"] == 10
    with rt.sessions() as session:
        project_row = session.get(Project, 1)
        report = status.project_status(session, 1)["projects"][0]
    assert project_row.label_config is None and project_row.classes != "null"
    assert report["config_error"].startswith("label config refused: category 1000000")
    assert status.as_text({"projects": [report]}).count("label config refused") == 1


def test_a_task_over_the_limits_is_left_out_with_its_reason_and_the_others_go_on(
    tmp_path, database_url, redis_url, capsys, monkeypatch
):
    good, crowded = _task(1, ["Car"]), _task(2, ["Car"] * 6)
    fake = FakeLabelStudio(
        "ls-token", {1: delivery("15-PROJECT_UPDATED")["project"]}, {1: [good, crowded]}
    )
    rt = _pulling_runtime(tmp_path, database_url, redis_url, fake, max_regions=5)
    r = Receiver(rt)
    try:
        _signal(r, "TASKS_CREATED")
        run_worker(rt)
        labels = bucket(rt) / "exports/1/yolo/labels"
        assert task_file(rt, 1) and task_file(rt, 2)  # the task files mirror Label Studio
        assert sorted(p.name for p in labels.iterdir()) == ["1__1.txt"]
        answer = r.get("/api/projects/1/status", headers={"Authorization": "Token api-token"})
    finally:
        r.close()
        fake.close()
    with rt.sessions() as session:
        rows = store.failed_tasks(session, 1)
    assert [(t, why) for t, _p, why in rows] == [
        (2, "task.annotations[0].result: 6 regions; at most 5 (ANNOSYNC_MAX_REGIONS)")
    ]
    manifest = (bucket(rt) / "exports/1/manifest.jsonl").read_text()
    assert '"task_id":2' not in manifest.replace(" ", "")
    _cli_env(monkeypatch, rt)
    from sync import cli

    assert cli.main(["deliveries", "list", "--failed"]) == 0
    out = capsys.readouterr().out
    assert "tasks left out of the exports" in out and "6 regions; at most 5" in out
    assert answer.json()["tasks_not_exported"] == 1
    assert answer.json()["unexported_tasks"] == [{"task": 2, "reason": rows[0][2]}]


def _cli_env(monkeypatch, rt: Runtime) -> None:
    s = rt.settings
    monkeypatch.setenv("ANNOSYNC_DATABASE_URL", s.database_url)
    monkeypatch.setenv("REDIS_URL", s.redis_url)
    monkeypatch.setenv("ANNOSYNC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("ANNOSYNC_WEBHOOK_SECRET", "not-used-here")


def test_a_left_out_task_is_exported_once_it_changes_to_fit(receiver, runtime):
    assert receiver.post(delivery("15-PROJECT_UPDATED")).status_code == 202
    body = delivery("03-ANNOTATION_CREATED")
    body["annotation"]["result"] *= 6  # 12 regions: fine at the receiver (10,000)
    assert receiver.post(body).status_code == 202
    strict = Runtime(
        make_settings(
            runtime.settings.data_dir.parent,
            runtime.settings.database_url,
            runtime.settings.redis_url,
            max_regions=5,
        )
    )
    run_worker(strict)  # a worker with lower limits than the receiver
    with strict.sessions() as session:
        assert [t for t, _p, _w in store.failed_tasks(session, 1)] == [1]
    fixed = delivery("05-ANNOTATION_UPDATED")
    assert receiver.post(fixed).status_code == 202
    run_worker(strict)
    with strict.sessions() as session:
        assert store.failed_tasks(session, 1) == []
    assert list((bucket(runtime) / "exports/1/yolo/labels").glob("1__*.txt"))


def test_a_region_label_beyond_the_class_limit_leaves_only_its_task_out(
    tmp_path, sqlite_url, redis_url
):
    config = _config(["A", "B"])
    tasks = [_task(1, ["A"]), _task(2, ["B", "C"]), _task(3, ["B"])]
    fake = FakeLabelStudio(
        "ls-token",
        {1: {**delivery("15-PROJECT_UPDATED")["project"], "label_config": config}},
        {1: tasks},
    )
    rt = _pulling_runtime(tmp_path, sqlite_url, redis_url, fake, max_labels=2)
    _pull(rt, fake, "TASKS_CREATED")
    classes = (bucket(rt) / "exports/1/yolo/classes.txt").read_text().splitlines()
    assert classes == ["A", "B"]
    with rt.sessions() as session:
        reasons = {t: why for t, _p, why in store.failed_tasks(session, 1)}
    assert list(reasons) == [2] and "would be class 3; at most 2" in reasons[2]
    set_runtime(None)


def test_a_reason_echoing_a_nul_from_the_payload_is_stored(tmp_path, database_url, redis_url):
    # The reason names the result key, and a key may hold NUL, which PostgreSQL text refuses:
    # recording it failed the whole write of the batch, drain after drain.
    rt = Runtime(make_settings(tmp_path, database_url, redis_url))
    body = delivery("03-ANNOTATION_CREATED")
    body["annotation"]["result"][0]["value"]["odd\x00labels"] = ["z" * 200]
    r = Receiver(rt)
    try:
        assert r.post(body).status_code == 202
    finally:
        r.close()
    strict = Runtime(make_settings(tmp_path, database_url, redis_url, max_label_chars=100))
    run_worker(strict)
    with strict.sessions() as session:
        [(task, _project, why)] = store.failed_tasks(session, 1)
    assert task == 1 and "odd\ufffdlabels" in why and "200 characters" in why
    assert task_file(strict, 1)["annotations"][0]["id"] == 1


def test_convert_leaves_out_a_task_over_the_limits_and_names_it(tmp_path, monkeypatch, capsys):
    from sync import cli

    export = tmp_path / "export.json"
    export.write_text(orjson.dumps([_task(1, ["Car"]), _task(2, ["Car", "Car", "Car"])]).decode())
    monkeypatch.setenv("ANNOSYNC_MAX_REGIONS", "2")
    monkeypatch.setenv("ANNOSYNC_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "yolo"
    assert cli.main(["convert", str(export), "-f", "YOLO", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "task 2 not converted: task.annotations[0].result: 3 regions; at most 2" in captured.err
    assert "1 task converted" in captured.out and "1 task left out" in captured.out
    assert [p.name for p in (out / "labels").iterdir()] == ["1__1.txt"]
