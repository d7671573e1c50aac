"""The backbone's identity: the freeze proof's SHA-256 of its weights, remembered per weight files.

Hashing mmBERT-base's 1.2 GB of tensors takes seconds and needs the model loaded. The result is
remembered in ``<cache_dir>/backbone_sha256.json`` together with the size, modification time and
SHA-256 of the bytes of the folder's weight and config files. A later frozen run whose features are
cached does not load the encoder: it re-hashes the files' bytes (about a second per GB) and uses
the remembered tensor hashes only when they are byte-identical, at the start and again at the end
of the run. Any change invalidates the entry; a corrupt memo file is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from filelock import FileLock

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

MEMO_NAME = "backbone_sha256.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def weight_files(folder: Path) -> list[str]:
    return [n for n in (*WEIGHT_FILES, "config.json") if (folder / n).is_file()]


def files_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of the bytes of the folder's weight and config files (index files name the shards)."""
    names = weight_files(folder)
    for index in (n for n in names if n.endswith(".index.json")):
        try:
            shards = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()
            names += sorted({s for s in shards if (folder / s).is_file()})
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # an unreadable index: its own bytes are hashed, loading it will fail loudly
    return {name: file_sha256(folder / name) for name in names}


def config_sha256(folder: Path) -> str:
    """SHA-256 of the values of ``folder/config.json`` (key order and formatting aside; its name and
    transformers version too): what the architecture is built from."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{folder / 'config.json'}: unreadable ({type(e).__name__}: {e})") from None
    values = (
        {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}
        if isinstance(config, dict)
        else config
    )
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _files_stat(folder: Path) -> dict[str, list[int]]:
    return {n: [(folder / n).stat().st_size, (folder / n).stat().st_mtime_ns] for n in weight_files(folder)}


def remembered_hashes(folder: Path, cache_dir: Path) -> tuple[dict[str, str], int, dict[str, str]] | None:
    """(tensor name -> SHA-256, parameter count, file name -> SHA-256) recorded for these exact weight
    files, verified by hashing their bytes now; None when unknown or changed."""
    entry = read_memo(cache_dir / MEMO_NAME).get(str(folder.resolve()))
    try:
        if not entry or entry["files"] != _files_stat(folder):
            return None
        tensors, parameters, files = entry["tensor_sha256"], int(entry["parameters"]), entry["file_sha256"]
    except (KeyError, TypeError, ValueError):
        log.warning("%s: its entry for %s is incomplete; hashing the encoder again", cache_dir / MEMO_NAME, folder)
        return None
    if files_sha256(folder) != files:
        log.warning("%s: weight files changed without a new modification time; hashing the encoder again", folder)
        return None
    return tensors, parameters, files


def remember_hashes(folder: Path, cache_dir: Path, tensor_hashes: dict[str, str], parameters: int) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo = cache_dir / MEMO_NAME
    with FileLock(str(memo) + ".lock"):
        entries = read_memo(memo)
        entries[str(folder.resolve())] = {
            "files": _files_stat(folder),
            "file_sha256": files_sha256(folder),
            "tensor_sha256": tensor_hashes,
            "parameters": parameters,
        }
        write_json(memo, entries)
