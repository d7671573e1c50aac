"""Read raw dataset parts: JSON arrays or JSON Lines of {"input": str, "output": str}, UTF-8.

Every problem is a PipelineError naming the file and the record (1-based) or line at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.errors import PipelineError

RAW_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class Record:
    text: str
    label: str
    file: str  # the raw part it came from (data.split=files uses it)
    where: str  # "record 3" or "line 3", for messages


def list_raw_files(raw_dir: Path) -> list[Path]:
    if not raw_dir.is_dir():
        raise PipelineError(f"{raw_dir}: raw data folder does not exist (data.raw_dir)")
    files = sorted(p for p in raw_dir.iterdir() if p.is_file() and p.suffix in RAW_SUFFIXES)
    if not files:
        raise PipelineError(f"{raw_dir}: no *.json or *.jsonl files to preprocess (data.raw_dir)")
    return files


def read_raw_file(path: Path, data: bytes) -> list[Record]:
    """Parse ``data``, the bytes read from ``path`` (read once, so they match the fingerprint)."""
    text = decode_utf8(path, data)
    if not text.strip():
        raise PipelineError(f"{path}: file is empty")
    if text.lstrip().startswith("["):
        items = _parse_json_array(path, text)
    else:
        items = _parse_json_lines(path, text)
    if not items:
        raise PipelineError(f"{path}: contains no records")
    return [_to_record(path, where, item) for where, item in items]


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
    return Record(text=item["input"], label=item["output"], file=path.name, where=where)
