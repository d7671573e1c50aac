"""Read raw dataset parts: JSON arrays or JSON Lines of {"input": str, "output": str}, UTF-8.

Every problem is a PipelineError naming the file and the record (1-based) or line at fault.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class Record:
    text: str
    label: str
    file: str  # the raw part it came from (data.split=files uses it)
    where: str  # "record 3" or "line 3", for messages
    written_label: str = ""  # the label as written, when normalise_label changed it


def list_raw_files(raw_dir: Path) -> list[Path]:
    """The raw parts: ``*.json`` / ``*.jsonl`` in any letter case; hidden files (``.x``, macOS ``._x``)
    and other files are skipped and named in the log."""
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
    if hidden:
        log.info("%s: skipped %d hidden file(s): %s", raw_dir, len(hidden), _names(hidden))
    if other:
        log.info("%s: skipped %d entr(ies) that are not .json/.jsonl files: %s", raw_dir, len(other), _names(other))
    if not files:
        raise PipelineError(f"{raw_dir}: no *.json or *.jsonl files to preprocess (data.raw_dir)")
    return files


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def normalise_label(label: str) -> str:
    """Labels are compared after Unicode NFC and without surrounding whitespace: ``"sport "`` and a
    decomposed ``"Спорт"`` are the labels ``"sport"`` and ``"Спорт"``."""
    return unicodedata.normalize("NFC", label).strip()


def read_raw_file(path: Path, data: bytes) -> list[Record]:
    """Parse ``data``, the bytes read from ``path`` (read once, so they match the fingerprint)."""
    return [_to_record(path, where, item) for where, item in read_json_items(path, data)]


def read_json_items(path: Path, data: bytes) -> list[tuple[str, object]]:
    """The items of a JSON array, or of JSON Lines, each with its position ("record 3", "line 3").

    A ``.json`` file holding one object that is not a record is named as such (not "broken JSON").
    """
    text = decode_utf8(path, data)
    if not text.strip():
        raise PipelineError(f"{path}: file is empty")
    if text.lstrip().startswith("["):
        items = _parse_json_array(path, text)
    else:
        items = _parse_json_lines(path, text) if not _is_one_object(text) else [_one_object(path, text)]
    if not items:
        raise PipelineError(f"{path}: contains no records")
    return items


def _one_object(path: Path, text: str) -> tuple[str, object]:
    item = _loads(path, "the object", text)
    if not {"input", "output"} <= item.keys():
        shown = ", ".join(repr(k) for k in list(item)[:5])
        raise PipelineError(f"{path}: a JSON object with keys {shown}, not records: expected a JSON array of "
                            "{\"input\", \"output\"} records, or JSON Lines of them")
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
        raise PipelineError(f"{path}: {where}: duplicate key \"{e}\" in one object") from None


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
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"line {lineno}", _loads(path, f"line {lineno}", line)))
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path}: line {lineno} column {e.colno}: broken JSON: {e.msg}") from None
    return items


def _to_record(path: Path, where: str, item: object) -> Record:
    if not isinstance(item, dict):
        raise PipelineError(f"{path}: {where}: expected an object with \"input\" and \"output\", got {type(item).__name__}")
    for key in ("input", "output"):
        if key not in item:
            raise PipelineError(f"{path}: {where}: missing field \"{key}\"")
        if not isinstance(item[key], str):
            raise PipelineError(f"{path}: {where}: field \"{key}\" must be a string, got {type(item[key]).__name__}")
    if not item["input"].strip():
        raise PipelineError(f"{path}: {where}: empty text in \"input\"")
    if not item["output"].strip():
        raise PipelineError(f"{path}: {where}: empty label in \"output\"")
    for key in ("input", "output"):
        check_unicode(path, where, key, item[key])
    label = normalise_label(item["output"])
    return Record(text=item["input"], label=label, file=path.name, where=where,
                  written_label=item["output"] if label != item["output"] else "")


def check_unicode(path: Path, where: str, key: str, value: str) -> None:
    """A JSON escape like ``\\ud800`` decodes to a lone surrogate, which no UTF-8 file can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PipelineError(f"{path}: {where}: field \"{key}\" holds an invalid character "
                            f"(a lone surrogate \\u{ord(value[e.start]):04x} at character {e.start + 1})") from None
