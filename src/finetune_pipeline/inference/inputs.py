"""Input files for ``predict`` (texts) and ``evaluate`` (labelled texts), and the output file.

Both read every raw-data format (.json, .jsonl, .csv, .tsv, .parquet; see ``data/raw_reader.py``)
with the text (and, for evaluate, the label) in the field or column given, by default the run's
``data.text_field`` / ``data.label_field``. predict also reads a JSON array or JSON Lines of plain
strings, and any other file as plain text, one text per line (blank lines skipped); ``-`` is
standard input (one text per line, or JSON Lines of strings or records).
predict writes JSON Lines, a JSON array (``.json``) or CSV (``.csv``; ``top_k`` as a JSON cell; a
cell that a spreadsheet would run as a formula starts with an apostrophe). Lines are split at "\\n"
only (never at U+2028, form feeds or other characters a text may hold).
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import BinaryIO

from finetune_pipeline.artifacts.atomic import atomic_path, text_lines, to_json, write_jsonl
from finetune_pipeline.artifacts.metrics_record import RunMetrics
from finetune_pipeline.data.raw_reader import (
    RAW_SUFFIXES,
    check_unicode,
    decode_utf8,
    read_items,
    read_json_items,
    read_raw_file,
)
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

STDIN = Path("-")


def read_texts(path: Path, text_field: str = "input", stdin: BinaryIO | None = None) -> list[str]:
    """The texts of a file (``-``: of ``stdin``, one per line, or JSON Lines of strings or records)."""
    if path == STDIN:
        return _stdin_texts(stdin if stdin is not None else sys.stdin.buffer, text_field)
    if path.suffix.lower() in RAW_SUFFIXES:
        texts = [
            _text_of(path, where, item, text_field)
            for where, item in read_items(path, _read_bytes(path), (text_field,))
        ]
    else:
        lines = text_lines(decode_utf8(path, _read_bytes(path)))
        texts = [line for line in lines if line.strip()]
    if not texts:
        raise PipelineError(f"{path}: no texts to classify")
    return texts


def _stdin_texts(stream: BinaryIO, text_field: str) -> list[str]:
    where = Path("<stdin>")
    if stream.isatty():  # nothing piped in: the user types the texts
        log.info("reading texts from the terminal, one per line; end with Ctrl-D")
    text = decode_utf8(where, stream.read())
    lines = [line for line in text_lines(text) if line.strip()]
    if lines and lines[0].lstrip().startswith(("{", '"')):  # JSON Lines: strings or records
        items = read_json_items(Path("<stdin>.jsonl"), "\n".join(lines), (text_field,))
        texts = [_text_of(where, at, item, text_field) for at, item in items]
    else:
        texts = lines
    if not texts:
        raise PipelineError("<stdin>: no texts to classify (one per line, or JSON Lines)")
    return texts


def checked_texts(texts: list[str]) -> list[str]:
    """Texts given on the command line (--text), checked as a file's are."""
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise PipelineError(f"--text number {i}: empty text")
        check_unicode(Path("--text"), f"number {i}", "text", text)
    return list(texts)


def read_labelled(
    path: Path, fields: tuple[str, str] = ("input", "output"), separator: str | None = None
) -> tuple[list[str], list, list[str]]:
    """Texts, labels (a label, or a tuple of them for a list; ``separator`` cuts a string into such a
    list) and each record's position ("record 3", "line 3", "row 3") of a labelled file."""
    if path.suffix.lower() not in RAW_SUFFIXES:
        raise PipelineError(
            f"{path}: a labelled file is {', '.join(RAW_SUFFIXES)} with a text and a label "
            f"field ({fields[0]!r}, {fields[1]!r}; --text-field / --label-field)"
        )
    records = read_raw_file(path, _read_bytes(path), fields, separator)
    return [r.text for r in records], [r.label for r in records], [r.where for r in records]


def write_rows(path: Path, rows: list[dict]) -> None:
    """One JSON array (.json), CSV (.csv, nested values as JSON) or else JSON Lines; written atomically."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        with atomic_path(path) as tmp:
            tmp.write_text(to_json(rows, indent=1) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["text"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(
            {k: spreadsheet_safe(to_json(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}
            for row in rows
        )
        with atomic_path(path) as tmp:
            tmp.write_text(out.getvalue(), encoding="utf-8")
    else:
        write_jsonl(path, rows)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text: a string that would start a formula (``=HYPERLINK(...)``,
    ``+1``, ``@SUM``) gets a leading apostrophe, OWASP's rule for CSV injection. Numbers stay numbers."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def run_fields(run_dir: Path) -> tuple[str, str]:
    """The text and label field a run was trained with (``data`` of its metrics.json); the original
    ``input`` / ``output`` for runs from before those fields were recorded."""
    try:
        data = RunMetrics.read(run_dir).data
    except PipelineError:  # no or unreadable record: loading the run says what is wrong
        return "input", "output"
    return str(data.get("text_field", "input")), str(data.get("label_field", "output"))


def run_label_separator(run_dir: Path) -> str | None:
    """The ``data.label_separator`` a run was trained with (None: none, or not recorded)."""
    try:
        return RunMetrics.read(run_dir).data.get("label_separator") or None
    except PipelineError:
        return None


def _text_of(path: Path, where: str, item: object, text_field: str) -> str:
    if isinstance(item, dict):
        if text_field not in item:
            raise PipelineError(f'{path}: {where}: no "{text_field}" field (--text-field names the text\'s field)')
        item = item[text_field]
    if item is None:
        raise PipelineError(f"{path}: {where}: empty text (null)")
    if not isinstance(item, str):
        raise PipelineError(f"{path}: {where}: expected a text (string), got {type(item).__name__}")
    if not item.strip():
        raise PipelineError(f"{path}: {where}: empty text")
    check_unicode(path, where, text_field, item)
    return item


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
