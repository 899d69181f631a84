"""Reading a JSON array of objects one element at a time, from chunks of bytes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from sync.errors import InvalidInput

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class JSONStreamError(InvalidInput):
    """The stream is not a JSON array."""


def iter_array(chunks: Iterable[bytes], max_item_bytes: int = 256 * 1024 * 1024) -> Iterator[Any]:
    """Yield the items of a top-level JSON array without holding the whole array.

    Memory is bounded by the largest single item (at most twice it, plus a chunk), not by
    the array.
    """
    buffer, state = "", "start"
    pending = b""
    # An item that did not fit is decoded again only once the buffer has doubled: decoding
    # it at every chunk read made a 44 MiB item (a large brush mask) cost 8 s, not 0.4 s.
    retry_at = 0
    for chunk in chunks:
        if state == "done":
            break
        pending += chunk
        try:
            text = pending.decode()
            pending = b""
        except UnicodeDecodeError as exc:  # a multi-byte character split across chunks
            text, pending = pending[: exc.start].decode(), pending[exc.start :]
        buffer += text
        if len(buffer) < retry_at:
            continue
        buffer, state, items = _drain(buffer, state)
        yield from items
        if len(buffer) > max_item_bytes:
            raise JSONStreamError("an array item is larger than the limit")
        retry_at = min(2 * len(buffer), max_item_bytes + 1)
    if state != "done":
        buffer, state, items = _drain(buffer, state)
        yield from items
    if state != "done" or buffer.strip(_WS):
        raise JSONStreamError("the stream is not one complete JSON array")


def _drain(buffer: str, state: str) -> tuple[str, str, list]:
    """Every whole item at the start of ``buffer``: ``(the rest, the state, the items)``.

    States: ``start`` (before ``[``), ``first`` (after it), ``next`` (after an item: ``,``
    or ``]``), ``item`` (after a comma), ``done`` (after ``]``). The rest starts at an item
    that is not whole yet, and the state says what comes before it has been read."""
    items, pos = [], 0
    while True:
        pos = _skip(buffer, pos)
        if pos >= len(buffer) or state == "done":
            return buffer[pos:], state, items
        char = buffer[pos]
        if state == "start":
            if char != "[":
                raise JSONStreamError("the stream does not start with '['")
            state, pos = "first", pos + 1
        elif state == "next":
            if char not in ",]":
                raise JSONStreamError(f"expected ',' or ']' after an item, found {char!r}")
            state, pos = ("item" if char == "," else "done"), pos + 1
        elif state == "first" and char == "]":
            state, pos = "done", pos + 1
        else:
            try:
                item, pos = _DECODER.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                return buffer[pos:], state, items  # incomplete: wait for more
            items.append(item)
            state = "next"


def _skip(buffer: str, pos: int) -> int:
    while pos < len(buffer) and buffer[pos] in _WS:
        pos += 1
    return pos
