"""Which train/val/test split a run uses, and why (``data.split``), said in one log line.

``auto`` (the default) keeps a dataset's official split: when every raw part's name carries exactly
one split word (``part-1-train.json``, ``news.validation.jsonl``, ``dev.csv``), or with a Hugging
Face dataset's mapped splits. A split no part names (e.g. no validation part) is carved, stratified,
from train. Otherwise -- no split words, or only some parts with one -- the records are split
stratified, as ``stratified`` always does. ``files`` insists on the parts' split; ``kfold`` cuts folds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from finetune_pipeline.config.schema import DataConfig, SplitMode
from finetune_pipeline.data.multilabel_split import iterative_parts, iterative_split, require_every_label
from finetune_pipeline.data.split import (
    SPLIT_WORDS,
    Split,
    kfold_split,
    require_every_class,
    split_by_files,
    stratified_split,
)
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChosenSplit:
    split: Split
    how: str  # "stratified", "files", "files (val carved from train)", "fold 0 of 5"
    why: str  # for the log: what decided it


def choose_split(
    cfg: DataConfig, files: list[str], labels: list, names: dict[int, str], keeps_own: bool
) -> ChosenSplit:
    """``files``: the raw part (or Hugging Face split) of each record; ``labels``: each record's class
    id, or (multi-label) its list of label ids; ``keeps_own``: a Hugging Face dataset with train, val
    and test mapped (always split as it comes)."""
    if labels and isinstance(labels[0], (list, tuple)):
        return _multilabel_split(cfg, files, labels, names, keeps_own)
    if cfg.split == SplitMode.kfold:
        if keeps_own:
            raise PipelineError(
                "data.split=kfold: data.hf.splits maps train, val and test, so the dataset would keep its "
                "own split; set one to null (e.g. data.hf.splits.test=null) to cut its records into folds"
            )
        split = kfold_split(labels, cfg.folds, cfg.fold, cfg.val_ratio, cfg.seed, names)
        return ChosenSplit(split, f"fold {cfg.fold} of {cfg.folds}", "data.split=kfold")
    if cfg.split == SplitMode.files or keeps_own:
        why = "data.split=files" if cfg.split == SplitMode.files else "the dataset's train, val and test splits"
        return ChosenSplit(split_by_files(files, labels, names), "files", why)
    if cfg.split == SplitMode.auto:
        chosen = _official_split(cfg, files, labels, names)
        if chosen is not None:
            return chosen
    why = _why_not_official(files) if cfg.split == SplitMode.auto else "data.split=stratified"
    split = stratified_split(labels, cfg.train_ratio, cfg.val_ratio, cfg.seed, names)
    return ChosenSplit(split, "stratified", why)


def _multilabel_split(
    cfg: DataConfig, files: list[str], label_sets: list, names: dict[int, str], keeps_own: bool
) -> ChosenSplit:
    """Multi-label records: iterative stratification (every label in train, val and test, its share
    kept), or the parts' own split with a missing val or test carved from train the same way."""
    if cfg.split == SplitMode.kfold:
        raise PipelineError(
            "data.split=kfold: k-fold splits are for single-label data; for this multi-label data use "
            "data.split=stratified (iterative stratification) or data.split=files"
        )
    if cfg.split == SplitMode.files or keeps_own:
        split = split_by_files(files, [0] * len(files), {0: "any record"})  # the parts' names checked
        require_every_label(split, label_sets, names, "data.split=files")
        why = "data.split=files" if cfg.split == SplitMode.files else "the dataset's train, val and test splits"
        return ChosenSplit(split, "files", why)
    if cfg.split == SplitMode.auto:
        chosen = _official_split(cfg, files, label_sets, names)
        if chosen is not None:
            return chosen
    split = iterative_split(label_sets, cfg.train_ratio, cfg.val_ratio, cfg.seed, names)
    why = "data.split=stratified" if cfg.split == SplitMode.stratified else _why_not_official(files)
    return ChosenSplit(split, "stratified (iterative, multi-label)", why)


def split_word(file_name: str) -> str | None:
    """``train``, ``val`` or ``test`` when the name holds exactly one split word (whole words), else None."""
    words = set(re.split(r"[^a-z0-9]+", Path(file_name).stem.lower()))
    found = [split for split, spelled in SPLIT_WORDS.items() if words & set(spelled)]
    return found[0] if len(found) == 1 else None


def _official_split(cfg: DataConfig, files: list[str], labels: list, names: dict[int, str]) -> ChosenSplit | None:
    """The parts' own split when every part names one and train is among them; None otherwise. A
    missing val or test is carved from train: stratified, or for multi-label records (label tuples)
    iteratively stratified."""
    parts = sorted(set(files))
    words = {name: split_word(name) for name in parts}
    if any(w is None for w in words.values()) or "train" not in words.values():
        return None
    rows: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, name in enumerate(files):
        rows[words[name]].append(i)
    missing = [s for s in ("val", "test") if not rows[s]]
    if len(missing) == 2:
        return None  # train parts only: nothing official to keep
    multi_label = bool(labels) and isinstance(labels[0], (list, tuple))
    y = None if multi_label else np.asarray(labels)
    for part in missing:  # carved from train with the share the ratios give it
        share = (cfg.val_ratio if part == "val" else 1.0 - cfg.train_ratio - cfg.val_ratio) / cfg.train_ratio
        if multi_label:
            train = rows["train"]
            kept, carved_rows = iterative_parts(
                [labels[i] for i in train], [1.0 - share, share], cfg.seed, names, f"train and {part}"
            )
            rows["train"], rows[part] = [train[i] for i in kept], [train[i] for i in carved_rows]
        else:
            rows["train"], rows[part] = _carve(rows["train"], y, share, cfg.seed, part)
    split = Split(*(np.sort(np.asarray(rows[s], dtype=np.int64)) for s in ("train", "val", "test")))
    if multi_label:
        require_every_label(split, labels, names, "data.split=auto")
    else:
        require_every_class(split, y, names, "data.split=auto")
    named = "/".join(sorted({name_word for name in parts if (name_word := _spelled(name))}))
    if not missing:
        carved = ""
    elif multi_label:
        carved = f" ({' and '.join(missing)} carved from train, iteratively stratified)"
    else:
        carved = f" ({' and '.join(missing)} carved, stratified, from train)"
    return ChosenSplit(
        split, f"files{carved}", f"parts named {named}: using their split{carved}; data.split=stratified re-splits"
    )


def _carve(train: list[int], y: np.ndarray, share: float, seed: int, part: str) -> tuple[list[int], list[int]]:
    try:
        kept, carved = train_test_split(np.asarray(train), test_size=share, stratify=y[train], random_state=seed)
    except ValueError as e:  # a class with a single train record, or a share of nothing
        raise PipelineError(
            f"data.split=auto: no {part} part, and {part} cannot be carved, stratified, from the train parts "
            f"({e}); add a {part} part or use data.split=stratified"
        ) from None
    return list(kept), list(carved)


def _spelled(file_name: str) -> str | None:
    """The split word as the part's name spells it (``validation``, ``dev``), for the log line."""
    words = re.split(r"[^a-z0-9]+", Path(file_name).stem.lower())
    return next((w for w in words if any(w in spelled for spelled in SPLIT_WORDS.values())), None)


def _why_not_official(files: list[str]) -> str:
    parts = sorted(set(files))
    with_word = [name for name in parts if split_word(name)]
    if not with_word:
        return "no part's name says its split (train / val / test)"
    if len(with_word) < len(parts):
        without = [name for name in parts if not split_word(name)]
        log.warning(
            "data.split=auto: %d of %d parts name a split, %s do not; splitting all records stratified "
            "(rename them, or data.split=files)",
            len(with_word),
            len(parts),
            ", ".join(without[:5]),
        )
        return "only some parts name a split"
    return (
        "the parts name no train split besides the others"
        if "train" not in map(split_word, parts)
        else "every part is a train part"
    )
