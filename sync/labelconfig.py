"""Parse a Label Studio labelling config: object tags, control tags, labels in order."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from sync.errors import InvalidInput

#: Tags that show data (what is labelled).
OBJECT_TAGS = frozenset(
    {
        "Image",
        "Text",
        "HyperText",
        "Audio",
        "AudioPlus",
        "Video",
        "TimeSeries",
        "Paragraphs",
        "Table",
        "Pdf",
        "Markdown",
        "List",
        "Ranker",
    }
)
#: Control tags that label regions (the ones that make classes).
REGION_TAGS = frozenset(
    {
        "RectangleLabels",
        "PolygonLabels",
        "KeyPointLabels",
        "BrushLabels",
        "EllipseLabels",
        "PolyLineLabels",
    }
)
#: Control tags whose children are <Label>/<Choice> values, or that annotate otherwise.
CONTROL_TAGS = REGION_TAGS | {
    "Labels",
    "HyperTextLabels",
    "ParagraphLabels",
    "TimeSeriesLabels",
    "VideoRectangle",
    "Choices",
    "Taxonomy",
    "TextArea",
    "Rating",
    "Number",
    "DateTime",
    "Rectangle",
    "Polygon",
    "KeyPoint",
    "Brush",
    "Ellipse",
    "BitmaskLabels",
    "Relations",
    "Pairwise",
    "Ranker",
}
MAX_CONFIG_BYTES = 1_000_000
#: A ``category`` annosync reads as a class id: ASCII digits (``str.isdigit`` also accepts
#: "²", which ``int`` refuses); anything else is ignored, as Label Studio's converter does.
CATEGORY = re.compile(r"-?[0-9]{1,18}")


class LabelConfigError(InvalidInput):
    """The config is not parseable XML."""


def parse_label_config(xml: str) -> dict[str, Any]:
    """``{"objects": [...], "controls": [...]}`` in document order.

    Each control: ``name``, ``type``, ``to_name`` (list), ``labels`` (values in config order)
    and ``categories`` (label → int from a ``category`` attribute, where given).
    """
    if len(xml.encode()) > MAX_CONFIG_BYTES:
        raise LabelConfigError("label config larger than 1 MB")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not valid XML: {exc}") from None
    objects, controls = [], []
    for element in root.iter():
        if element.tag in OBJECT_TAGS and element.get("name"):
            objects.append(
                {
                    "name": element.get("name"),
                    "type": element.tag,
                    "value": (element.get("value") or "").lstrip("$"),
                }
            )
        elif element.tag in CONTROL_TAGS and element.get("name"):
            controls.append(_control(element))
    return {"objects": objects, "controls": controls}


def _control(element: ET.Element) -> dict[str, Any]:
    # dict keys: ordered and de-duplicated in linear time (configs may hold 10^4 labels)
    labels: dict[str, None] = {}
    categories: dict[str, int] = {}
    for child in element.iter():
        if child is element or child.tag not in {"Label", "Choice"}:
            continue
        value = child.get("value") or child.get("alias")
        if value is None or value in labels:
            continue
        labels[value] = None
        category = child.get("category")
        if category is not None and CATEGORY.fullmatch(category.strip()):
            categories[value] = int(category)
    return {
        "name": element.get("name"),
        "type": element.tag,
        "to_name": [n for n in (element.get("toName") or "").split(",") if n],
        "labels": list(labels),
        "categories": categories,
        "choice": element.get("choice") or "single",
    }
