"""CONLL2003: ``result.conll``, IOB tags on the text of each task.

Tokenisation (documented, deterministic): a token is a run of word characters with inner
hyphens or apostrophes (``state-of-the-art``, ``don't``) or a single other non-space
character. A span that cuts a token tags the whole token: the token is labelled when the
span covers any of its characters, ``B-`` on the first token of the span. Where spans
overlap, the earlier (then the longer) one wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.files import object_data
from sync.exporters.regions import chosen_annotation, strings

TOKEN = re.compile(r"\w+(?:[-'\u2019]\w+)*|[^\w\s]")
HEADER = b"-DOCSTART- -X- O O\n"  # the document line `spacy convert -c conll` splits on


def tokens(text: str) -> list[tuple[str, int, int]]:
    """``(token, start, end)`` offsets into ``text``."""
    return [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(text)]


def spans(task: dict[str, Any]) -> list[tuple[int, int, str]]:
    """``(start, end, label)`` of the chosen annotation's text labels."""
    found = []
    for item in (chosen_annotation(task) or {}).get("result") or []:
        value = item.get("value")
        if item.get("type") != "labels" or not isinstance(value, dict):
            continue
        start, end, labels = value.get("start"), value.get("end"), strings(value.get("labels"))
        if isinstance(start, int) and isinstance(end, int) and end > start and labels:
            found.append((start, end, labels[0].replace(" ", "_")))
    return sorted(found, key=lambda s: (s[0], -s[1]))


def iob_tags(toks: list[tuple[str, int, int]], labelled: list[tuple[int, int, str]]) -> list:
    """The IOB tag of every token."""
    tags = []
    previous = None
    for _, start, end in toks:
        span = next((s for s in labelled if s[0] < end and start < s[1]), None)
        if span is None:
            tags.append("O")
        else:
            tags.append(("I-" if span is previous else "B-") + span[2])
        previous = span
    return tags


def text_of(task: dict[str, Any], ctx: ExportContext) -> str:
    """The labelled text: the Text object's data key, else the first string in the data."""
    text = object_data(task, ctx, ("Text", "HyperText"))
    data = task.get("data") or {}
    return text if text is not None else next((v for v in data.values() if isinstance(v, str)), "")


class ConllExporter:
    """``token -X- _ TAG`` lines, a blank line after each task."""

    name = "CONLL2003"
    title = "CoNLL 2003 (IOB)"
    objects = frozenset({"Text", "HyperText"})
    folder = "conll2003"
    media_folder = None
    supports = frozenset({"Labels"})

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        toks = tokens(text_of(task, ctx))
        if not toks:
            return TaskExport({}, b"")
        tags = iob_tags(toks, spans(task))
        lines = "".join(f"{tok} -X- _ {tag}\n" for (tok, _, _), tag in zip(toks, tags, strict=True))
        return TaskExport({}, (lines + "\n").encode())

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result.conll": HEADER + b"\n" + b"".join(fragments)}


register(ConllExporter())
