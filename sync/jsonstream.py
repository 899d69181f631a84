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

    Memory is bounded by the largest single item (plus a chunk), not the array.
    """
    buffer, started, done = "", False, False
    pending = b""
    for chunk in chunks:
        if done:
            break
        pending += chunk
        try:
            text = pending.decode()
            pending = b""
        except UnicodeDecodeError as exc:  # a multi-byte character split across chunks
            text, pending = pending[: exc.start].decode(), pending[exc.start :]
        buffer += text
        buffer, started, done, items = _drain(buffer, started)
        yield from items
        if len(buffer) > max_item_bytes:
            raise JSONStreamError("an array item is larger than the limit")
    if not done:
        buffer, started, done, items = _drain(buffer, started)
        yield from items
    if not started or not done or buffer.strip(_WS):
        raise JSONStreamError("the stream is not one complete JSON array")


def _drain(buffer: str, started: bool) -> tuple[str, bool, bool, list]:
    items, pos = [], 0
    if not started:
        pos = _skip(buffer, pos)
        if pos >= len(buffer):
            return "", False, False, items
        if buffer[pos] != "[":
            raise JSONStreamError("the stream does not start with '['")
        started, pos = True, pos + 1
    while True:
        pos = _skip(buffer, pos)
        if pos < len(buffer) and buffer[pos] == ",":
            pos = _skip(buffer, pos + 1)
        if pos >= len(buffer):
            return "", started, False, items
        if buffer[pos] == "]":
            return buffer[pos + 1 :], started, True, items
        try:
            item, end = _DECODER.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            return buffer[pos:], started, False, items  # incomplete: wait for more
        items.append(item)
        pos = end


def _skip(buffer: str, pos: int) -> int:
    while pos < len(buffer) and buffer[pos] in _WS:
        pos += 1
    return pos
