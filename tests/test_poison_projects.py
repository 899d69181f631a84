"""Deliveries naming their project in unusual ways are applied, or refused at once when
nothing could ever apply them (never accepted and then failed for good)."""

from __future__ import annotations

from conftest import bucket, delivery, run_worker, task_file
from sqlalchemy import select

from sync.models import Delivery, Project
from sync.runtime import Runtime


def _statuses(rt: Runtime) -> dict[str, str]:
    with rt.sessions() as session:
        return {d.action: d.status for d in session.scalars(select(Delivery))}


def test_a_project_wide_task_delete_of_an_unseen_project_is_applied(receiver, runtime):
    body = {"action": "TASKS_DELETED", "tasks": [{"id": 5}, {"id": 6}]}
    assert receiver.post(body, path="/webhooks/label-studio/77").status_code == 202
    run_worker(runtime)
    assert _statuses(runtime) == {"TASKS_DELETED": "applied"}


def test_a_project_wide_task_delete_without_any_project(receiver, runtime):
    body = {"action": "TASKS_DELETED", "tasks": [{"id": 5}]}
    assert receiver.post(body).status_code == 202
    run_worker(runtime)
    assert _statuses(runtime) == {"TASKS_DELETED": "applied"}


def test_tasks_naming_a_project_by_id_only_are_written(receiver, runtime):
    body = delivery("01-TASKS_CREATED")
    body.pop("project", None)
    for task in body["tasks"]:
        task["project"] = 7
    assert receiver.post(body).status_code == 202
    run_worker(runtime)
    assert _statuses(runtime) == {"TASKS_CREATED": "applied"}


def test_a_payloadless_delivery_without_a_project_is_refused_naming_the_url(receiver, runtime):
    answer = receiver.post({"action": "ANNOTATION_CREATED"})
    assert answer.status_code == 400
    assert answer.json()["detail"][0]["path"] == "project_id"
    assert _statuses(runtime) == {"ANNOTATION_CREATED": "rejected"}


def test_a_nul_in_the_project_title_does_not_fail_the_project(receiver, runtime):
    project = {**delivery("15-PROJECT_UPDATED")["project"], "title": "cats\x00dogs"}
    created = delivery("01-TASKS_CREATED")
    created["project"] = {**created["project"], "title": "cats\x00dogs"}
    assert receiver.post({"action": "PROJECT_UPDATED", "project": project}).status_code == 202
    assert receiver.post(created).status_code == 202
    run_worker(runtime)
    assert _statuses(runtime) == {"PROJECT_UPDATED": "applied", "TASKS_CREATED": "applied"}
    with runtime.sessions() as session:
        titles = set(session.scalars(select(Project.title)))
    assert titles == {"cats\ufffddogs"}


def test_a_task_whose_image_url_python_cannot_parse_is_exported_like_the_others(receiver, runtime):
    receiver.post(delivery("15-PROJECT_UPDATED"))  # the project and its label config
    created = delivery("01-TASKS_CREATED")
    good, bad = dict(created["tasks"][0]), dict(created["tasks"][0])
    good.update(id=501, data={"image": "http://example.com/ok.jpg"})
    bad.update(id=502, data={"image": "http://[::1/x.jpg"})
    assert receiver.post({**created, "tasks": [good, bad]}).status_code == 202
    run_worker(runtime)
    assert task_file(runtime, 501) and task_file(runtime, 502)
    labels = bucket(runtime) / "exports" / "1" / "yolo" / "labels"
    assert {p.name for p in labels.glob("50*")} >= {"501__ok.txt", "502__x.txt"}
