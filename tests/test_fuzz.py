"""Hostile payloads: never a 5xx, never a traceback, nothing applied for rejected ones."""

from __future__ import annotations

import json

from conftest import bucket, delivery, run_worker
from fastjsonschema import JsonSchemaException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sync.models import Delivery

ACTIONS = [
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED",
    "TASKS_CREATED",
    "TASKS_DELETED",
    "PROJECT_UPDATED",
    "PROJECT_DELETED",
    "X",
    "",
    "annotation_created",
]
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.one_of(
    st.integers(-5, 2**64),
    st.text(max_size=20),
    st.floats(allow_nan=False),
    st.just("../../etc/passwd"),
    st.none(),
)


@st.composite
def hostile(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:  # arbitrary JSON
        return draw(json_value)
    body = json.loads(json.dumps(delivery("03-ANNOTATION_CREATED")))
    body["action"] = draw(st.sampled_from(ACTIONS))
    if kind == 1:  # a captured delivery with one part replaced by garbage
        target = draw(st.sampled_from(["annotation", "task", "project"]))
        key = draw(st.sampled_from(["id", "result", "data", "created_at", "updated_at"]))
        if isinstance(body.get(target), dict):
            body[target][key] = draw(st.one_of(ids, json_value))
        return body
    if kind == 2:  # lists of ids of every shape
        name = draw(st.sampled_from(["tasks", "annotations", "annotation", "task"]))
        body[name] = draw(
            st.lists(st.one_of(st.fixed_dictionaries({"id": ids}), json_value), max_size=5)
        )
        return body
    return {"action": draw(st.sampled_from(ACTIONS)), draw(st.text(max_size=10)): draw(json_value)}


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile())
def test_hostile_payloads_get_a_4xx_or_202_never_a_5xx(receiver, runtime, body):
    response = receiver.post(body)
    assert response.status_code in {202, 400}, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in response.text


def test_after_the_storm_rejected_deliveries_changed_nothing(receiver, runtime):
    bad = delivery("03-ANNOTATION_CREATED")
    bad["task"]["id"] = "../../x"
    assert receiver.post(bad).status_code == 400
    run_worker(runtime)
    with runtime.sessions() as session:
        assert list(session.scalars(select(Delivery.status))) == ["rejected"]
    assert not (bucket(runtime) / "tasks").exists()


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile())
def test_the_fast_check_and_the_full_validator_agree(body):
    """The receiver trusts fastjsonschema's "valid"; it must never differ from jsonschema's."""
    from config.validation import SCHEMA_FOR_ACTION, fast_check, validator

    for name in {"envelope", *SCHEMA_FOR_ACTION.values()}:
        try:
            fast_check(name)(body)
            fast_valid = True
        except JsonSchemaException:
            fast_valid = False
        assert fast_valid == validator(name).is_valid(body), name
