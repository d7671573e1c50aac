"""Rows of CSV, TSV and Parquet parts, as ``(where, {column: value})`` like the JSON items.

The same record checks then apply to every format (``raw_reader.to_record``); what is particular
to a table is checked here: the header must name the text and label columns, and every CSV row
must have the header's number of fields. Parquet is read with pyarrow (extra ``data``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from finetune_pipeline.artifacts.atomic import text_lines
from finetune_pipeline.errors import PipelineError

csv.field_size_limit(1 << 30)  # a news article in one cell is larger than csv's default 128 KiB


def csv_items(path: Path, text: str, columns: tuple[str, ...], delimiter: str) -> list[tuple[str, dict]]:
    """Rows of a CSV (``delimiter=","``) or TSV (``"\\t"``) file with a header line, each named by
    its line ("line 3"; a quoted CSV cell may span lines, the row is named by its first). TSV has no
    quoting (IANA text/tab-separated-values): a cell is everything between two tabs, quotes included."""
    if delimiter == "\t":
        reader = _TsvReader(text)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise PipelineError(f"{path}: no header line (the first line must name the columns)")
        header = [cell.strip() for cell in header]
        check_columns(path, header, columns)
        items = []
        start = reader.line_num + 1
        for row in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(header):
                raise PipelineError(
                    f"{path}: {where}: {len(row)} fields, but the header has {len(header)} "
                    f"(an unquoted {delimiter!r} or a missing field?)"
                )
            items.append((where, dict(zip(header, row))))
    except csv.Error as e:
        raise PipelineError(f"{path}: line {reader.line_num}: broken CSV: {e}") from None
    return items


class _TsvReader:
    """csv.reader's interface over tab-separated lines: split at "\\n" and at tabs, nothing else."""

    def __init__(self, text: str):
        self.lines, self.line_num = text_lines(text), 0
        if self.lines and self.lines[-1] == "":
            self.lines.pop()  # the file's final newline

    def __iter__(self):
        return self

    def __next__(self) -> list[str]:
        if self.line_num >= len(self.lines):
            raise StopIteration
        self.line_num += 1
        return self.lines[self.line_num - 1].split("\t")


def parquet_items(path: Path, data: bytes, columns: tuple[str, ...]) -> list[tuple[str, dict]]:
    """Rows of a Parquet file ("row 3", 1-based), only the text and label columns read."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PipelineError(f"{path}: reading Parquet needs pyarrow: pip install 'finetune-pipeline[data]'") from None
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        check_columns(path, parquet.schema_arrow.names, columns)
        table = parquet.read(columns=list(columns))
    except (pa.ArrowException, OSError) as e:
        raise PipelineError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    rows = table.to_pylist()
    return [(f"row {i}", row) for i, row in enumerate(rows, start=1)]


def check_columns(path: Path, header: list[str], columns: tuple[str, ...]) -> None:
    """The columns needed are there, each once (which of two same-named columns is meant is a guess)."""
    for column in columns:
        if header.count(column) > 1:
            raise PipelineError(f"{path}: column {column!r} appears {header.count(column)} times in the header")
        if column not in header:
            shown = ", ".join(repr(h) for h in header[:10]) + (" ..." if len(header) > 10 else "")
            raise PipelineError(
                f"{path}: no column {column!r} (columns: {shown}); name the text and label columns "
                "with data.text_field / data.label_field (train) or --text-field / --label-field"
            )
