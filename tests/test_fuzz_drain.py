"""Hostile label configs, media URLs and results never crash a drain: whatever a Label Studio
user can put in a project, its drain ends, every delivery is applied (a config annosync cannot
use is refused, not the delivery), no task is left owed, and the aggregates rebuild."""

from __future__ import annotations

import itertools
from xml.sax.saxutils import quoteattr

import orjson
import pytest
from conftest import delivery, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from test_formats import _result

from sync import db, exports, inbox, jobs
from sync.labelconfig import CONTROL_TAGS, OBJECT_TAGS
from sync.limits import Limits, config_issues
from sync.models import Delivery, Task
from sync.runtime import Runtime, set_runtime

_CATEGORIES = ["0", "7", "-1", "1e9", "1000000", "²", "٣", " 3 ", "99999999999999999999", ""]
_URLS = [
    "http://[::1/x.jpg",
    "http://[zz]/a.png",
    "/data/local-files/?d=../../etc/passwd",
    "s3://bucket/../../x.jpg",
    "file:///etc/shadow",
    "http://example.com/%00%2e%2e/a.jpg",
    "\x00\n\t",
    "http://" + "a" * 5000 + ".jpg",
]
_text = st.text(max_size=12)
_label = st.one_of(_text, st.sampled_from(["Car", "A" * 300, "x\ny", "&amp;", "<"]))


@st.composite
def label_config(draw) -> str:
    """Label-config XML with any tags, names, labels and ``category`` attributes."""
    objects = draw(st.lists(st.sampled_from(sorted(OBJECT_TAGS)), min_size=0, max_size=2))
    parts = [f'<{tag} name="o{n}" value="$image"/>' for n, tag in enumerate(objects)]
    for n, tag in enumerate(draw(st.lists(st.sampled_from(sorted(CONTROL_TAGS)), max_size=3))):
        labels = draw(st.lists(_label, max_size=5))
        children = ""
        for label in labels:
            category = draw(st.sampled_from([None, *_CATEGORIES]))
            shown = "" if category is None else f" category={quoteattr(category)}"
            children += f"<Label value={quoteattr(label)}{shown}/>"
        to_name = draw(st.sampled_from(["o0", "o1", "", "o0,o1", "nowhere"]))
        parts.append(f'<{tag} name="c{n}" toName="{to_name}">{children}</{tag}>')
    xml = "<View>" + "".join(parts) + "</View>"
    return draw(st.sampled_from([xml, xml, xml, xml[: len(xml) // 2], draw(_text)]))


_task_data = st.dictionaries(
    st.sampled_from(["image", "text", "audio"]),
    st.one_of(st.sampled_from(_URLS), _text, st.integers(-(2**63), 2**63 - 1), st.none()),
    max_size=2,
)

_project_ids = itertools.count(1000)


@pytest.fixture(scope="module")
def fuzz_runtime(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("fuzz-drain")
    url = f"sqlite:///{tmp / 'annosync.db'}"
    db.upgrade(url)
    rt = Runtime(make_settings(tmp, url, redis_server, max_regions=3, max_points=5))
    set_runtime(rt)
    yield rt
    set_runtime(None)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    config=label_config(),
    tasks=st.lists(st.tuples(_task_data, st.lists(_result, max_size=5)), min_size=1, max_size=3),
)
def test_no_hostile_project_crashes_its_drain(fuzz_runtime, config, tasks):
    rt, project_id = fuzz_runtime, next(_project_ids)
    issues = config_issues(config, Limits.from_settings(rt.settings))  # the receiver's check
    assert all(issue.path == "project.label_config" for issue in issues)
    base = delivery("01-TASKS_CREATED")
    body = {
        "action": "TASKS_CREATED",
        "project": {**base["project"], "id": project_id, "label_config": config},
        "tasks": [
            {
                "id": project_id * 10 + n,
                "data": data,
                "project": project_id,
                "annotations": [{"id": project_id * 10 + n, "result": results}],
            }
            for n, (data, results) in enumerate(tasks)
        ],
    }
    inbox.record(
        rt.engine,
        action="TASKS_CREATED",
        project_id=project_id,
        body=orjson.dumps(body),
        key=None,
        status=inbox.PENDING,
    )
    jobs.drain_project(project_id)  # raising here is the failure
    exports.write_aggregates(rt, project_id)
    with rt.sessions() as session:
        statuses = set(
            session.scalars(select(Delivery.status).where(Delivery.project_id == project_id))
        )
        owed = session.scalar(
            select(func.count()).where(Task.project_id == project_id, Task.dirty.is_(True))
        )
    assert statuses == {"applied"} and owed == 0  # a bad config is refused, never the delivery
