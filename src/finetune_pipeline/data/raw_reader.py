"""Read raw dataset parts: JSON arrays or JSON Lines of {"input": str, "output": str} records, CSV or
TSV files with a header line, or Parquet files (the text and label columns or keys are named by
``data.text_field`` / ``data.label_field``). Text files are UTF-8.

A label may also be a list of labels (a JSON array, a Parquet list column, or a string cut at
``data.label_separator``): the record then has a set of labels (multi-label data), possibly empty.

Every format goes through the same record checks; every problem is a PipelineError naming the
file and the record, line or row (1-based) at fault.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.atomic import text_lines
from finetune_pipeline.data.tabular import csv_items, parquet_items
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")
DEFAULT_FIELDS = ("input", "output")  # the original pipeline's keys: text, label
_SKIPS_SAID: set[tuple] = set()  # (folder, hidden, other) already reported by list_raw_files


Label = str | tuple[str, ...]  # one label, or a record's set of labels (sorted, no repeats)


@dataclass(frozen=True)
class Record:
    text: str
    label: Label
    file: str  # the raw part it came from (data.split=files uses it)
    where: str  # "record 3" or "line 3", for messages
    written_label: str = ""  # the label as written, when normalise_label changed it (one of them, for a set)


def list_raw_files(raw_dir: Path) -> list[Path]:
    """The raw parts: ``*.json``, ``*.jsonl``, ``*.csv``, ``*.tsv``, ``*.parquet`` in any letter case;
    hidden files (``.x``, macOS ``._x``) and other files are skipped and named in the log."""
    if not raw_dir.exists():
        raise PipelineError(f"{raw_dir}: raw data folder does not exist (data.raw_dir)")
    if not raw_dir.is_dir():
        raise PipelineError(f"{raw_dir}: is a file, not a folder of raw parts (data.raw_dir)")
    try:
        entries = sorted(raw_dir.iterdir())
    except OSError as e:
        raise PipelineError(f"{raw_dir}: cannot list the raw data folder ({e.strerror or e})") from None
    hidden = [p.name for p in entries if p.name.startswith(".")]
    files = [p for p in entries if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in RAW_SUFFIXES]
    other = [p.name for p in entries if not p.name.startswith(".") and p not in files]
    said = (str(raw_dir), tuple(hidden), tuple(other))  # the folder is listed several times per run: say it once
    if said not in _SKIPS_SAID:
        _SKIPS_SAID.add(said)
        if hidden:
            log.info("%s: skipped %d hidden file(s): %s", raw_dir, len(hidden), _names(hidden))
        if other:
            log.info(
                "%s: skipped %d entr(ies) that are not %s files: %s",
                raw_dir,
                len(other),
                "/".join(RAW_SUFFIXES),
                _names(other),
            )
    if not files:
        raise PipelineError(
            f"{raw_dir}: no {', '.join('*' + s for s in RAW_SUFFIXES)} files to preprocess (data.raw_dir)"
        )
    return files


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def normalise_label(label: str) -> str:
    """Labels are compared after Unicode NFC and without surrounding whitespace: ``"sport "`` and a
    decomposed ``"Спорт"`` are the labels ``"sport"`` and ``"Спорт"``."""
    return unicodedata.normalize("NFC", label).strip()


def read_raw_file(
    path: Path, data: bytes, fields: tuple[str, str] = DEFAULT_FIELDS, separator: str | None = None
) -> list[Record]:
    """Parse ``data``, the bytes read from ``path`` (read once, so they match the fingerprint);
    ``fields``: the text and the label key or column; ``separator``: cuts a string label into several."""
    return [to_record(path, where, item, fields, separator) for where, item in read_items(path, data, fields)]


def read_items(path: Path, data: bytes, fields: tuple[str, ...] = DEFAULT_FIELDS) -> list[tuple[str, object]]:
    """The records of a raw part of any format, each with its position ("record 3", "line 3", "row 3");
    ``fields``: the keys or columns needed (tables are checked to have them)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        items = parquet_items(path, data, fields)
    else:
        text = decode_utf8(path, data)
        if not text.strip():
            raise PipelineError(f"{path}: file is empty")
        if suffix in (".csv", ".tsv"):
            items = csv_items(path, text, fields, "\t" if suffix == ".tsv" else ",")
        else:
            items = read_json_items(path, text, fields)
    if not items:
        raise PipelineError(f"{path}: contains no records")
    return items


def read_json_items(path: Path, text: str, fields: tuple[str, ...] = DEFAULT_FIELDS) -> list[tuple[str, object]]:
    """The items of a JSON array, or of JSON Lines, each with its position ("record 3", "line 3").

    A ``.json`` file holding one object that is not a record is named as such (not "broken JSON").
    """
    if text.lstrip().startswith("["):
        return _parse_json_array(path, text)
    return _parse_json_lines(path, text) if not _is_one_object(text) else [_one_object(path, text, fields)]


def _one_object(path: Path, text: str, fields: tuple[str, ...]) -> tuple[str, object]:
    item = _loads(path, "the object", text)
    if not set(fields) <= item.keys():
        shown = ", ".join(repr(k) for k in list(item)[:5])
        wanted = ", ".join(f'"{f}"' for f in fields)
        raise PipelineError(
            f"{path}: a JSON object with keys {shown}, not records: expected a JSON array of "
            f"{{{wanted}}} records, or JSON Lines of them"
        )
    return "record 1", item


def _is_one_object(text: str) -> bool:
    """A whole (pretty-printed, multi-line) JSON object rather than JSON Lines."""
    if "\n" not in text.strip():
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def decode_utf8(path: Path, data: bytes) -> str:
    """``data`` as text (a BOM is dropped), or an error naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PipelineError(f"{path}: line {line}: not valid UTF-8 (byte offset {e.start})") from None


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise _DuplicateKey(duplicated[0])
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def _loads(path: Path, where: str, text: str) -> object:
    """json.loads that refuses an object with the same key twice (which value would win is a guess)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as e:
        raise PipelineError(f'{path}: {where}: duplicate key "{e}" in one object') from None


def _parse_json_array(path: Path, text: str) -> list[tuple[str, object]]:
    try:
        items = _loads(path, "JSON array", text)
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}: line {e.lineno} column {e.colno}: broken JSON: {e.msg}") from None
    if not isinstance(items, list):
        raise PipelineError(f"{path}: expected a JSON array of records")
    return [(f"record {i}", item) for i, item in enumerate(items, start=1)]


def _parse_json_lines(path: Path, text: str) -> list[tuple[str, object]]:
    items = []
    for lineno, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"line {lineno}", _loads(path, f"line {lineno}", line)))
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path}: line {lineno} column {e.colno}: broken JSON: {e.msg}") from None
    return items


def to_record(
    path: Path, where: str, item: object, fields: tuple[str, str] = DEFAULT_FIELDS, separator: str | None = None
) -> Record:
    """One checked record: the text is a non-empty string of valid Unicode; the label a non-empty
    string, or a list of them (possibly empty: a text with none of the labels). ``separator``: a
    string label holding it is the list of its non-empty parts."""
    text_key, label_key = fields
    if not isinstance(item, dict):
        raise PipelineError(
            f'{path}: {where}: expected an object with "{text_key}" and "{label_key}", got {type(item).__name__}'
        )
    for key in fields:
        if key not in item:
            raise PipelineError(f'{path}: {where}: missing field "{key}"')
        if item[key] is None:
            raise PipelineError(f'{path}: {where}: field "{key}" is empty (null)')
    text, written = item[text_key], item[label_key]
    if not isinstance(text, str):
        raise PipelineError(
            f'{path}: {where}: field "{text_key}" must be a string, got {type(text).__name__} {text!r:.40}'
        )
    if not text.strip():
        raise PipelineError(f'{path}: {where}: empty text in "{text_key}"')
    check_unicode(path, where, text_key, text)
    if isinstance(written, str) and separator and separator in written:
        written = [part for part in written.split(separator) if part.strip()]
    if isinstance(written, (list, tuple)):
        labels = [_one_label(path, where, label_key, value, in_list=True) for value in written]
        changed = [value for value, label in zip(written, labels) if value != label]
        return Record(text, tuple(sorted(set(labels))), path.name, where, changed[0] if changed else "")
    label = _one_label(path, where, label_key, written, in_list=False)
    return Record(text, label, path.name, where, written if label != written else "")


def _one_label(path: Path, where: str, key: str, value: object, in_list: bool) -> str:
    """A label checked and normalised (``normalise_label``)."""
    inside = " holds an item that" if in_list else ""
    if not isinstance(value, str):
        kind = "a string or a list of strings" if not in_list else "a string"
        raise PipelineError(
            f'{path}: {where}: field "{key}"{inside} must be {kind}, got {type(value).__name__} {value!r:.40}'
        )
    if not value.strip():
        raise PipelineError(f'{path}: {where}: empty label in "{key}"')
    check_unicode(path, where, key, value)
    return normalise_label(value)


def check_unicode(path: Path, where: str, key: str, value: str) -> None:
    """A JSON escape like ``\\ud800`` decodes to a lone surrogate, which no UTF-8 file can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PipelineError(
            f'{path}: {where}: field "{key}" holds an invalid character '
            f"(a lone surrogate \\u{ord(value[e.start]):04x} at character {e.start + 1})"
        ) from None
