"""The streaming reader of JSON arrays that `annosync convert` reads exports with."""

from __future__ import annotations

import json

import pytest

from sync import jsonstream
from sync.jsonstream import JSONStreamError, iter_array

ITEMS = [
    {"id": 1, "text": "caf\u00e9 \u2603 \U0001f600"},
    {"id": 2, "nested": [1, [2, {"a": "]"}]]},
    3,
]


def chunked(blob: bytes, size: int) -> list[bytes]:
    return [blob[i : i + size] for i in range(0, len(blob), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_items_come_out_whole_wherever_the_chunks_split(size):
    blob = b" \n" + json.dumps(ITEMS, ensure_ascii=False).encode() + b"\n"
    assert list(iter_array(chunked(blob, size))) == ITEMS  # split characters included


@pytest.mark.parametrize(
    "blob",
    [
        *[b"", b"{}", b'[{"id": 1}', b'[{"id": 1}] x', b'[{"id": 1},, {"id": 2}]'],
        *[b"[{bad}]", b"[,1]", b"[1,]", b"[1 2]", b"[1]]"],
    ],
)
def test_what_is_not_one_json_array_is_refused(blob):
    with pytest.raises(JSONStreamError):
        list(iter_array(chunked(blob, 4)))


def test_an_item_over_the_limit_is_refused_without_reading_the_rest():
    read = []

    def chunks():
        for chunk in chunked(json.dumps([{"a": "x" * 10_000}] * 3).encode(), 100):
            read.append(chunk)
            yield chunk

    with pytest.raises(JSONStreamError, match="larger than the limit"):
        list(iter_array(chunks(), max_item_bytes=1000))
    assert sum(map(len, read)) < 2_200  # the limit, doubled at most, then a chunk


def test_a_large_item_is_decoded_a_logarithmic_number_of_times(monkeypatch):
    calls = []
    drain = jsonstream._drain
    monkeypatch.setattr(jsonstream, "_drain", lambda *a: calls.append(1) or drain(*a))
    big = {"id": 1, "rle": list(range(100_000))}
    blob = json.dumps([big, {"id": 2}]).encode()
    chunks = chunked(blob, 1024)  # ~580 chunks
    assert list(iter_array(chunks)) == [big, {"id": 2}]
    assert len(calls) <= 15  # decoded as the buffer doubles, not at each of ~580 chunks
