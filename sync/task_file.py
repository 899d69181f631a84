"""The bytes of ``tasks/<id>.json``: one encoding for the store's writers and ``convert``."""

from __future__ import annotations

from typing import Any

import orjson


def encode_task(doc: dict[str, Any]) -> bytes:
    """The bytes of a task document as stored: same state, same bytes."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
