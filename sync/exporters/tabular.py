"""JSON, JSON_MIN, CSV and TSV: whole-project files, as Label Studio's export writes them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import TaskExport, register
from sync.exporters.records import META_KEYS, annotation_items, annotator, prettify
from sync.exporters.regions import ExportContext


def _json_array(elements: Iterable[bytes]) -> bytes:
    """A JSON array with one element per line (streamable, diff-friendly)."""
    body = b",\n".join(e for e in elements if e)
    return b"[\n" + body + b"\n]\n" if body else b"[]\n"


class JsonExporter:
    """``result.json``: the full tasks, annotations and all (what annosync stores)."""

    name = "JSON"
    title = "JSON (full tasks)"
    objects = frozenset()
    folder = "json"
    supports = frozenset()

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        return TaskExport({}, orjson.dumps(task))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result.json": _json_array(fragments)}


class JsonMinExporter:
    """``result.json``: a record per annotation: task data, each control's value under its
    name, and who/when."""

    name = "JSON_MIN"
    title = "JSON-MIN"
    objects = frozenset()
    folder = "json_min"
    supports = frozenset()

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        lines = [orjson.dumps(min_record(item)) for item in annotation_items(task, ctx.config)]
        return TaskExport({}, b",\n".join(lines))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        return {"result.json": _json_array(fragments)}


def min_record(item: dict[str, Any]) -> dict[str, Any]:
    """One JSON_MIN record."""
    record = dict(item["input"])
    record["id"] = item["id"]
    for name, values in item["output"].items():
        record[name] = prettify(values)
    record["annotator"] = annotator(item, int_id=True)
    for key in META_KEYS[1:]:
        record[key] = item[key]
    return record


class CsvExporter:
    """``result.csv``: a row per annotation; columns (sorted) are the data keys, the control
    names and who/when; structured values as JSON text; every non-number quoted."""

    name = "CSV"
    title = "CSV"
    objects = frozenset()
    folder = "csv"
    supports = frozenset()
    delimiter = ","
    filename = "result.csv"

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        controls = {c["name"] for c in (ctx.config or {}).get("controls", [])}
        rows = [csv_row(item, controls) for item in annotation_items(task, ctx.config)]
        return TaskExport({}, orjson.dumps(rows))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        rows = [row for fragment in fragments for row in orjson.loads(fragment)]
        columns = set(META_KEYS)
        for row in rows:
            columns.update(row)
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            fieldnames=sorted(columns),
            quoting=csv.QUOTE_NONNUMERIC,
            delimiter=self.delimiter,
        )
        writer.writeheader()
        writer.writerows(rows)
        return {self.filename: out.getvalue().encode()}


class TsvExporter(CsvExporter):
    """``result.tsv``: the CSV rows, tab-separated."""

    name = "TSV"
    title = "TSV"
    objects = frozenset()
    folder = "tsv"
    delimiter = "\t"
    filename = "result.tsv"


def csv_row(item: dict[str, Any], controls: set[str]) -> dict[str, Any]:
    """One CSV/TSV row (a task data key that is also a control name becomes ``_data_<key>``)."""
    controls = controls | set(item["output"])
    row: dict[str, Any] = {"id": item["id"]}
    for name, values in item["output"].items():
        pretty = prettify(values)
        row[name] = pretty if isinstance(pretty, str) else orjson.dumps(pretty).decode()
    for name, value in item["input"].items():
        column = f"_data_{name}" if name in controls else name
        row[column] = orjson.dumps(value).decode() if isinstance(value, (dict, list)) else value
    who = annotator(item, int_id=False)
    row["annotator"] = None if who in (None, "None") else who
    for key in META_KEYS[1:]:
        row[key] = item[key]
    return row


for _exporter in (JsonExporter(), JsonMinExporter(), CsvExporter(), TsvExporter()):
    register(_exporter)
