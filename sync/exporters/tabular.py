"""CSV and TSV: a row per annotation in one whole-project file, as Label Studio writes them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import orjson

from sync.exporters.base import ExportContext, TaskExport, register
from sync.exporters.records import META_KEYS, annotation_items, annotator, prettify


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


for _exporter in (CsvExporter(), TsvExporter()):
    register(_exporter)
