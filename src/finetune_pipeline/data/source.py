"""Where a source's processed files live: one folder per source, so datasets never share labels.

A source is a raw folder (``data.raw_dir``) or a Hugging Face dataset (``data.hf.path`` with its
configuration and revision), read with ``data.text_field`` / ``data.label_field``. Its folder is
``<data.processed_dir>/<name>-<8 hex>``: the name is readable (the folder's or dataset's own), the
hex digits are of the source's absolute location, so a renamed or moved folder gets a new
processed folder instead of a wrong old one. Explicit ``data.dataset_path`` /
``data.label_mapping_path`` are used as given.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.config.schema import DataConfig
from finetune_pipeline.data.raw_reader import DEFAULT_FIELDS
from finetune_pipeline.paths import project_root, resolve_path

DATASET_FILE = "combined_dataset.json"
MAPPING_FILE = "output_to_symbol.json"
LEGACY_FOLDER = Path("data") / "combined_processed"  # the one folder every source shared before
NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ProcessedPaths:
    dataset: Path  # combined_dataset.json
    mapping: Path  # output_to_symbol.json
    derived: bool  # the source's own folder (not paths the config set)

    @property
    def folder(self) -> Path:
        """Where the meta file, the data report and the lock live: beside the dataset."""
        return self.dataset.parent


def processed_paths(cfg: DataConfig) -> ProcessedPaths:
    folder = resolve_path(cfg.processed_dir) / source_folder_name(cfg)
    dataset = resolve_path(cfg.dataset_path) if cfg.dataset_path else folder / DATASET_FILE
    mapping = resolve_path(cfg.label_mapping_path) if cfg.label_mapping_path else folder / MAPPING_FILE
    return ProcessedPaths(dataset, mapping, derived=not cfg.dataset_path and not cfg.label_mapping_path)


def dataset_name(cfg: DataConfig) -> str:
    """The source's own name: its raw folder's (``raw``), or the dataset's with its configuration
    (``ag_news-default``); what names its processed folder and its runs in the trackers."""
    if cfg.hf.path:
        return "-".join(part for part in (Path(str(cfg.hf.path)).name, cfg.hf.name) if part)
    return resolve_path(cfg.raw_dir).resolve().name


def source_folder_name(cfg: DataConfig) -> str:
    """``<name>-<8 hex>``: e.g. ``raw-3f9a1c2e`` for data/raw, ``ag_news-default-1b2c3d4e`` for a Hub id."""
    name = dataset_name(cfg)
    if cfg.hf.path:
        path = resolve_path(cfg.hf.path)
        where = str(path.resolve()) if path.exists() else str(cfg.hf.path)  # a folder, or a Hub id
        identity = [where, cfg.hf.name, cfg.hf.revision]
    else:
        identity = [str(resolve_path(cfg.raw_dir).resolve())]
    if (cfg.text_field, cfg.label_field) != DEFAULT_FIELDS:  # other fields of the same files: other data
        identity += [cfg.text_field, cfg.label_field]
    digest = hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()[:8]
    readable = NAME_CHARACTERS.sub("_", name).strip("._-")[:40] or "source"
    return f"{readable}-{digest}"


def legacy_mapping(source: str, labels: set[str]) -> dict[str, str]:
    """The symbols an earlier version gave this source's labels in the shared ``data/combined_processed/``
    (when its record says it was built from this source), so a source keeps its symbols; else {}."""
    folder = project_root() / LEGACY_FOLDER
    try:
        meta = json.loads((folder / "preprocess_meta.json").read_text(encoding="utf-8"))
        mapping = json.loads((folder / MAPPING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("source") != source or not isinstance(mapping, dict):
        return {}
    return {label: symbol for label, symbol in mapping.items() if label in labels and isinstance(symbol, str)}
