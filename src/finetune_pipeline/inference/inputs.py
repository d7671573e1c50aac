"""Input files for ``predict`` (texts) and ``evaluate`` (labelled texts), and the output file.

predict reads, by suffix:
    .json    a JSON array of strings or of objects with an "input" field
    .jsonl   JSON Lines, each a string or an object with an "input" field
    other    plain text, one text per line (blank lines skipped)
evaluate reads the raw-data format: .json / .jsonl records {"input": text, "output": label}.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_pipeline.artifacts.atomic import atomic_path
from finetune_pipeline.data.raw_reader import decode_utf8, read_raw_file
from finetune_pipeline.errors import PipelineError


def read_texts(path: Path) -> list[str]:
    text = decode_utf8(path, _read_bytes(path))
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path}: line {e.lineno} column {e.colno}: broken JSON: {e.msg}") from None
        if not isinstance(items, list):
            raise PipelineError(f"{path}: expected a JSON array of texts or {{\"input\": ...}} objects")
        texts = [_text_of(path, f"record {i}", item) for i, item in enumerate(items, start=1)]
    elif path.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise PipelineError(f"{path}: line {lineno} column {e.colno}: broken JSON: {e.msg}") from None
            texts.append(_text_of(path, f"line {lineno}", item))
    else:
        texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise PipelineError(f"{path}: no texts to classify")
    return texts


def read_labelled(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Texts, labels and each record's position ("record 3", "line 3") of a labelled file."""
    if path.suffix not in (".json", ".jsonl"):
        raise PipelineError(f"{path}: a labelled file is .json or .jsonl with {{\"input\", \"output\"}} records")
    records = read_raw_file(path, _read_bytes(path))
    return [r.text for r in records], [r.label for r in records], [r.where for r in records]


def write_rows(path: Path, rows: list[dict]) -> None:
    """JSON Lines, or one JSON array when ``path`` ends in .json; written atomically."""
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as f:
            if path.suffix == ".json":
                json.dump(rows, f, ensure_ascii=False, indent=1)
                f.write("\n")
            else:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _text_of(path: Path, where: str, item: object) -> str:
    if isinstance(item, dict):
        if "input" not in item:
            raise PipelineError(f"{path}: {where}: object without an \"input\" field")
        item = item["input"]
    if not isinstance(item, str):
        raise PipelineError(f"{path}: {where}: expected a text (string), got {type(item).__name__}")
    if not item.strip():
        raise PipelineError(f"{path}: {where}: empty text")
    return item


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
