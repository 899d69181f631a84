"""Label Studio's per-annotation view of a task, shared by JSON_MIN, CSV and TSV.

Label Studio's converter turns each non-cancelled annotation into an item
``{id, input, output: {from_name: [values]}, completed_by, annotation_id, …}`` (newest
created first) and a task without annotations into one item with empty output; the
tabular formats are views of those items.
"""

from __future__ import annotations

from typing import Any

#: Result ``type`` → control tag, for results whose control the config does not name.
RESULT_TAGS = {
    "rectanglelabels": "RectangleLabels",
    "rectangle": "Rectangle",
    "polygonlabels": "PolygonLabels",
    "polygon": "Polygon",
    "keypointlabels": "KeyPointLabels",
    "keypoint": "KeyPoint",
    "brushlabels": "BrushLabels",
    "ellipselabels": "EllipseLabels",
    "polylinelabels": "PolyLineLabels",
    "labels": "Labels",
    "hypertextlabels": "HyperTextLabels",
    "choices": "Choices",
    "taxonomy": "Taxonomy",
    "textarea": "TextArea",
    "rating": "Rating",
    "number": "Number",
    "datetime": "DateTime",
}
META_KEYS = ("annotator", "annotation_id", "created_at", "updated_at", "lead_time")


def annotation_items(task: dict[str, Any], config: dict | None) -> list[dict[str, Any]]:
    """The task's items as Label Studio's converter builds them."""
    annotations = task.get("annotations")
    if annotations is None:
        annotations = task.get("completions") or []
    if not annotations:
        return [_item(task, {}, {})]
    kept = [a for a in annotations if not (a.get("was_cancelled") or a.get("skipped"))]
    kept.sort(key=lambda a: str(a.get("created_at") or ""), reverse=True)
    controls = {c["name"]: c["type"] for c in (config or {}).get("controls", [])}
    return [_item(task, _outputs(a, controls), a) for a in kept]


def _outputs(annotation: dict[str, Any], controls: dict[str, str]) -> dict[str, list]:
    outputs: dict[str, list] = {}
    for result in annotation.get("result") or []:
        name = result.get("from_name")
        tag = controls.get(name) or RESULT_TAGS.get(str(result.get("type")))
        if not name or tag is None or not isinstance(result.get("value"), dict):
            continue
        value = dict(result["value"])
        value["type"] = tag
        for key in ("original_width", "original_height"):
            if key in result:
                value[key] = result[key]
        outputs.setdefault(name, []).append(value)
    return outputs


def _item(task: dict[str, Any], outputs: dict, annotation: dict) -> dict[str, Any]:
    return {
        "id": task["id"],
        "input": task.get("data") or {},
        "output": outputs,
        "completed_by": annotation.get("completed_by", {}),
        "annotation_id": annotation.get("id"),
        "created_at": annotation.get("created_at"),
        "updated_at": annotation.get("updated_at"),
        "lead_time": annotation.get("lead_time"),
    }


def prettify(values: list[dict[str, Any]]) -> Any:
    """A control's values as JSON_MIN shows them: a single choice or text as a plain string,
    anything else as the list of values without their ``type``."""
    out, tag = [], None
    for value in values:
        value = dict(value)
        tag = value.pop("type")
        if (
            tag == "Choices"
            and isinstance(value.get("choices"), list)
            and len(value["choices"]) == 1
        ):
            out.append(value["choices"][0])
        elif tag == "TextArea" and isinstance(value.get("text"), list) and len(value["text"]) == 1:
            out.append(value["text"][0])
        else:
            out.append(value)
    return out[0] if tag in ("Choices", "TextArea") and len(out) == 1 else out


def annotator(item: dict[str, Any], int_id: bool) -> Any:
    """Who made the annotation: an email when the user object is there, else the id."""
    who = item["completed_by"]
    if isinstance(who, dict):
        return who.get("email")
    if isinstance(who, int) and int_id:
        return who
    return str(who)
