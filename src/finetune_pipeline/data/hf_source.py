"""A Hugging Face dataset as the raw data (``data.hf.path``): a ``save_to_disk`` folder or a Hub id.

Read with the ``datasets`` library (extra ``data``). Each split named in ``data.hf.splits`` becomes
records from the "file" ``train`` / ``val`` / ``test``, so ``data.split=files`` keeps the dataset's
own split; every row goes through the same checks as a raw part's record. A label column of
class ids with names (``ClassLabel``) is read as the names; any other non-string label is refused.
The fingerprint is the SHA-256 of the folder's files, or, for a Hub id, of the id, configuration,
revision and each split's ``datasets`` fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

from finetune_pipeline.backbone.identity import file_sha256
from finetune_pipeline.config.schema import DataConfig
from finetune_pipeline.data.raw_reader import Record, to_record
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import resolve_path

log = logging.getLogger(__name__)

OUR_SPLITS = ("train", "val", "test")


def hf_fingerprint(cfg: DataConfig) -> str:
    """The source's fingerprint without reading its rows (a folder's files are hashed)."""
    folder = resolve_path(cfg.hf.path)
    return _folder_sha256(folder) if folder.is_dir() else _load(cfg)[1]


def read_hf_dataset(cfg: DataConfig) -> tuple[list[Record], str, dict[str, int]]:
    """The records of the mapped splits, the source's fingerprint and the rows read per split."""
    splits = mapped_splits(cfg)
    dataset, fingerprint = _load(cfg)
    records: list[Record] = []
    rows: dict[str, int] = {}
    fields = (cfg.text_field, cfg.label_field)
    for ours, theirs in splits.items():
        if theirs not in dataset:
            raise PipelineError(
                f"data.hf.splits.{ours}={theirs!r}: {cfg.hf.path} has no such split (it has: {', '.join(dataset)})"
            )
        part = dataset[theirs]
        where = Path(f"{cfg.hf.path}[{theirs}]")
        missing = [f for f in fields if f not in part.column_names]
        if missing:
            raise PipelineError(
                f"{where}: no column {missing[0]!r} (columns: {', '.join(map(repr, part.column_names))}); "
                "set data.text_field / data.label_field"
            )
        names = _class_names(part.features[cfg.label_field])
        texts, labels = part[cfg.text_field], part[cfg.label_field]
        if names is not None:
            labels = [_named(v, names) for v in labels]
        for i, (text, label) in enumerate(zip(texts, labels), start=1):
            item = {cfg.text_field: text, cfg.label_field: label}
            record = to_record(where, f"row {i}", item, fields, cfg.label_separator or None)
            records.append(replace(record, file=ours))
        rows[ours] = len(texts)
    return records, fingerprint, rows


def mapped_splits(cfg: DataConfig) -> dict[str, str]:
    """Our split -> the dataset's, for the splits mapped (at least train)."""
    mapped = {ours: str(getattr(cfg.hf.splits, ours)) for ours in OUR_SPLITS if getattr(cfg.hf.splits, ours)}
    if not mapped:
        raise PipelineError("data.hf.splits: map at least one of train, val, test to a split of the dataset")
    return mapped


def keeps_own_split(cfg: DataConfig) -> bool:
    """A dataset with train, val and test mapped is split as it comes (like data.split=files)."""
    return bool(cfg.hf.path) and len(mapped_splits(cfg)) == len(OUR_SPLITS)


def _load(cfg: DataConfig):
    try:
        import datasets
    except ImportError:
        raise PipelineError("data.hf.path needs the datasets library: pip install 'finetune-pipeline[data]'") from None
    datasets.disable_progress_bars()
    folder = resolve_path(cfg.hf.path)
    if folder.is_dir():
        try:
            dataset = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError, OSError) as e:
            raise PipelineError(f"{folder}: not a dataset folder written by save_to_disk ({_one_line(e)})") from None
        if isinstance(dataset, datasets.Dataset):
            dataset = datasets.DatasetDict({"train": dataset})
        return dataset, _folder_sha256(folder)
    if folder.exists():
        raise PipelineError(f"data.hf.path={cfg.hf.path}: {folder} is a file, not a folder written by save_to_disk")
    if _looks_like_a_path(cfg.hf.path):
        raise PipelineError(f"data.hf.path={cfg.hf.path}: no such folder ({folder})")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise PipelineError(
            f"data.hf.path={cfg.hf.path}: a Hub dataset, but the Hub is switched off here "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); save it with save_to_disk where you are online "
            "and point data.hf.path at that folder"
        )
    try:
        dataset = datasets.load_dataset(cfg.hf.path, cfg.hf.name, revision=cfg.hf.revision)
    except Exception as e:
        raise PipelineError(
            f"data.hf.path={cfg.hf.path}: cannot load it from the Hub ({type(e).__name__}: "
            f"{_one_line(e)}); offline, save it with save_to_disk where you are online and point "
            "data.hf.path at that folder"
        ) from None
    h = hashlib.sha256(f"{cfg.hf.path}\0{cfg.hf.name}\0{cfg.hf.revision}".encode())
    for name in sorted(dataset):
        h.update(f"\0{name}:{dataset[name]._fingerprint}".encode())
    return dataset, h.hexdigest()


def _class_names(feature) -> list[str] | None:
    """The names of a ``ClassLabel`` column, or of a list column of them (``Sequence(ClassLabel)``)."""
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if names is None and isinstance(feature, list) and feature:  # datasets' [ClassLabel] list feature
        names = getattr(feature[0], "names", None)
    return list(names) if names else None


def _named(value: object, names: list[str]) -> object:
    """A class id (or a list of them) as its name; anything else as it is, for the record checks."""
    if isinstance(value, list):
        return [_named(v, names) for v in value]
    return names[value] if isinstance(value, int) and 0 <= value < len(names) else value


def _folder_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def _looks_like_a_path(value: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; anything else that is no folder is a missing folder."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
