"""Input files for ``predict`` (texts) and ``evaluate`` (labelled texts), and the output file.

predict reads, by suffix:
    .json    a JSON array of strings or of objects with an "input" field
    .jsonl   JSON Lines, each a string or an object with an "input" field
    other    plain text, one text per line (blank lines skipped)
evaluate reads the raw-data format: .json / .jsonl records {"input": text, "output": label}.
"""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.artifacts.atomic import atomic_path, to_json, write_jsonl
from finetune_pipeline.data.raw_reader import check_unicode, decode_utf8, read_json_items, read_raw_file
from finetune_pipeline.errors import PipelineError


def read_texts(path: Path) -> list[str]:
    if path.suffix.lower() in (".json", ".jsonl"):
        texts = [_text_of(path, where, item) for where, item in read_json_items(path, _read_bytes(path))]
    else:
        lines = decode_utf8(path, _read_bytes(path)).splitlines()
        texts = [line for line in lines if line.strip()]
    if not texts:
        raise PipelineError(f"{path}: no texts to classify")
    return texts


def read_labelled(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Texts, labels and each record's position ("record 3", "line 3") of a labelled file."""
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise PipelineError(f"{path}: a labelled file is .json or .jsonl with {{\"input\", \"output\"}} records")
    records = read_raw_file(path, _read_bytes(path))
    return [r.text for r in records], [r.label for r in records], [r.where for r in records]


def write_rows(path: Path, rows: list[dict]) -> None:
    """JSON Lines, or one JSON array when ``path`` ends in .json; written atomically."""
    if path.suffix.lower() == ".json":
        with atomic_path(path) as tmp:
            tmp.write_text(to_json(rows, indent=1) + "\n", encoding="utf-8")
    else:
        write_jsonl(path, rows)


def _text_of(path: Path, where: str, item: object) -> str:
    if isinstance(item, dict):
        if "input" not in item:
            raise PipelineError(f"{path}: {where}: object without an \"input\" field")
        item = item["input"]
    if not isinstance(item, str):
        raise PipelineError(f"{path}: {where}: expected a text (string), got {type(item).__name__}")
    if not item.strip():
        raise PipelineError(f"{path}: {where}: empty text")
    check_unicode(path, where, "input", item)
    return item


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
