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
    media_folder = None
    supports = frozenset()
    delimiter = ","
    filename = "result.csv"

    def render_task(self, task: dict[str, Any], raw: bytes, ctx: ExportContext) -> TaskExport:
        parts = [csv_parts(item) for item in annotation_items(task, ctx.config)]
        return TaskExport({}, orjson.dumps(parts))

    def aggregate(self, fragments: Iterable[bytes], ctx: ExportContext) -> dict[str, bytes]:
        parts = [part for fragment in fragments for part in orjson.loads(fragment)]
        # A data key becomes ``_data_<key>`` only where an annotation of the project writes a
        # column of that name: Label Studio would overwrite the data value there (annosync
        # keeps both); everywhere else the column is named as Label Studio names it.
        used = {name for part in parts for name in part["output"]}
        rows = [csv_row(part, used) for part in parts]
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
    media_folder = None
    delimiter = "\t"
    filename = "result.tsv"


def csv_parts(item: dict[str, Any]) -> dict[str, Any]:
    """What one annotation contributes to a row: its outputs (prettified, as text), its data
    and its who/when, kept apart until the aggregate knows every column name."""
    output = {}
    for name, values in item["output"].items():
        pretty = prettify(values)
        output[name] = pretty if isinstance(pretty, str) else orjson.dumps(pretty).decode()
    data = {
        name: orjson.dumps(value).decode() if isinstance(value, (dict, list)) else value
        for name, value in item["input"].items()
    }
    who = annotator(item, int_id=False)
    meta = {key: item[key] for key in META_KEYS[1:]}
    meta["annotator"] = None if who in (None, "None") else who
    return {"id": item["id"], "output": output, "data": data, "meta": meta}


def csv_row(part: dict[str, Any], used: set[str]) -> dict[str, Any]:
    """One CSV/TSV row; a data key that is also a column some annotation writes becomes
    ``_data_<key>``."""
    row = {f"_data_{name}" if name in used else name: v for name, v in part["data"].items()}
    row["id"] = part["id"]  # as in Label Studio: id, outputs and who/when win over data keys
    row.update(part["output"])
    row.update(part["meta"])
    return row


for _exporter in (CsvExporter(), TsvExporter()):
    register(_exporter)
