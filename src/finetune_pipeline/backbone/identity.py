"""The backbone's identity: the freeze proof's SHA-256 of its weights, remembered per weight files.

Hashing mmBERT-base's 1.2 GB of tensors takes seconds and needs the model loaded. The result is
remembered in ``<cache_dir>/backbone_sha256.json`` together with the size and modification time of
the folder's weight files (as git's index does), so a later frozen run whose features are cached
never loads the encoder at all. Any change to the files invalidates the entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.backbone.load import WEIGHT_FILES

MEMO_NAME = "backbone_sha256.json"


def _files_stat(folder: Path) -> dict[str, list[int]]:
    names = [n for n in (*WEIGHT_FILES, "config.json") if (folder / n).is_file()]
    return {n: [(folder / n).stat().st_size, (folder / n).stat().st_mtime_ns] for n in names}


def remembered_hashes(folder: Path, cache_dir: Path) -> tuple[dict[str, str], int] | None:
    """(tensor name -> SHA-256, parameter count) recorded for these exact weight files, or None."""
    memo = cache_dir / MEMO_NAME
    if not memo.is_file():
        return None
    entry = json.loads(memo.read_text(encoding="utf-8")).get(str(folder.resolve()))
    if not entry or entry["files"] != _files_stat(folder):
        return None
    return entry["tensor_sha256"], entry["parameters"]


def remember_hashes(folder: Path, cache_dir: Path, tensor_hashes: dict[str, str], parameters: int) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo = cache_dir / MEMO_NAME
    with FileLock(str(memo) + ".lock"):
        entries = json.loads(memo.read_text(encoding="utf-8")) if memo.is_file() else {}
        entries[str(folder.resolve())] = {"files": _files_stat(folder), "tensor_sha256": tensor_hashes,
                                        "parameters": parameters}
        write_json(memo, entries)
