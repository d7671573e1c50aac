"""Train/val/test split: stratified with scikit-learn (every class in every part), or by raw file."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from finetune_pipeline.errors import PipelineError

MIN_PER_CLASS = 3  # one record in each of train, val and test


@dataclass(frozen=True)
class Split:
    """Record indices (sorted int64 arrays) of each part of the dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __iter__(self):  # train, val, test
        return iter((self.train, self.val, self.test))

    def sha256(self) -> str:
        """Identity of the split, stored in the training state (a resumed run must use the same one)."""
        return hashlib.sha256(repr([list(map(int, part)) for part in self]).encode()).hexdigest()


def stratified_split(
    labels: list[int], train_ratio: float, val_ratio: float, seed: int, names: dict[int, str]
) -> Split:
    """Indices of the train, val and test records; every class appears in each split.

    ``names`` maps a class id to a readable name for error messages.
    """
    counts = Counter(labels)
    small = {names[c]: n for c, n in sorted(counts.items()) if n < MIN_PER_CLASS}
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(small.items())[:10])
        if len(small) > 10:
            listed += f" and {len(small) - 10} more"
        raise PipelineError(
            f"classes with fewer than {MIN_PER_CLASS} records cannot be split into train/val/test "
            f"with stratification: {listed}; add records or remove the class from data/raw"
        )
    y = np.asarray(labels)
    indices = np.arange(len(y))
    test_ratio = 1.0 - train_ratio - val_ratio
    try:
        # test first, then val out of the rest: the second split then stratifies over most of each
        # class, so classes of a few records still split (val-then-test would leave them 1 record)
        rest_idx, test_idx = train_test_split(indices, test_size=test_ratio, stratify=y, random_state=seed)
        train_idx, val_idx = train_test_split(
            rest_idx, test_size=val_ratio / (1.0 - test_ratio), stratify=y[rest_idx], random_state=seed
        )
    except ValueError as e:  # e.g. a split smaller than the number of classes
        raise PipelineError(
            f"cannot split {len(y)} records of {len(counts)} classes with data.train_ratio={train_ratio}, "
            f"data.val_ratio={val_ratio}: {e}"
        ) from None
    parts = _every_class_everywhere([list(train_idx), list(val_idx), list(test_idx)], y, seed)
    return Split(*(np.sort(np.asarray(part, dtype=np.int64)) for part in parts))


def _every_class_everywhere(
    parts: list[list[int]], y: np.ndarray, seed: int, parts_to_fill: int = 3
) -> list[list[int]]:
    """Move single records so that every class has one in each split.

    A stratified split rounds a rare class's share of val and test down to nothing (3 records of a
    class next to 1000 of another all land in train): that class would never be validated or
    tested. The record moved comes from the split holding most of the class, chosen by the seed.
    """
    rng = np.random.RandomState(seed)
    for c in np.unique(y):
        for target in range(parts_to_fill):
            if any(y[i] == c for i in parts[target]):
                continue
            donor = max(range(parts_to_fill), key=lambda k: sum(1 for i in parts[k] if y[i] == c))
            members = [i for i in parts[donor] if y[i] == c]
            moved = members[rng.randint(len(members))]
            parts[donor].remove(moved)
            parts[target].append(moved)
    return parts


def kfold_split(labels: list[int], folds: int, fold: int, val_ratio: float, seed: int, names: dict[int, str]) -> Split:
    """Stratified k-fold: the test split is fold ``fold`` of scikit-learn's ``StratifiedKFold(folds,
    shuffle=True, random_state=seed)``, so over folds 0..K-1 every record is tested exactly once; the
    validation split (``val_ratio`` of all records) is carved, stratified, out of the other folds."""
    counts = Counter(labels)
    small = {names[c]: n for c, n in sorted(counts.items()) if n < folds + 1}
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(small.items())[:10])
        raise PipelineError(
            f"data.split=kfold with data.folds={folds}: each class needs more than {folds} records "
            f"(one in every test fold, and some to train and validate on): {listed}"
        )
    y = np.asarray(labels)
    folds_of = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    rest, test = folds_of[fold]
    try:
        train, val = train_test_split(
            rest, test_size=val_ratio * len(y) / len(rest), stratify=y[rest], random_state=seed
        )
    except ValueError as e:
        raise PipelineError(
            f"data.split=kfold: cannot carve data.val_ratio={val_ratio} of the records out of the training folds: {e}"
        ) from None
    train, val = _every_class_everywhere([list(train), list(val), []], y, seed, parts_to_fill=2)[:2]  # test stays
    return Split(*(np.sort(np.asarray(part, dtype=np.int64)) for part in (train, val, test)))


SPLIT_WORDS = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}


def split_by_files(files: list[str], labels: list[int], names: dict[int, str]) -> Split:
    """Indices of train, val and test records by the raw part each came from (data.split=files).

    Every class must appear in each split (else it is never validated or tested): refused otherwise.
    """
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, name in enumerate(files):
        parts[split_of_file(name)].append(i)
    for split, indices in parts.items():
        if not indices:
            raise PipelineError(
                f"data.split=files: no raw file for the {split} split among {sorted(set(files))} "
                "(a file name needs one of the words train, val/valid/dev, or test)"
            )
    split = Split(*(np.asarray(parts[s], dtype=np.int64) for s in ("train", "val", "test")))
    require_every_class(split, np.asarray(labels), names, "data.split=files")
    return split


def require_every_class(split: Split, y: np.ndarray, names: dict[int, str], context: str) -> None:
    """Every class in train, val and test: else it is never validated or tested (refused)."""
    for part, indices in zip(("train", "val", "test"), split):
        missing = sorted(set(range(len(names))) - set(y[indices].tolist()))
        if missing:
            listed = ", ".join(repr(names[c]) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise PipelineError(
                f"{context}: the {part} split has no record of {listed}; every class needs "
                "records in train, val and test (or use data.split=stratified)"
            )


def split_of_file(file_name: str) -> str:
    """The split a raw part belongs to, by whole words of its name: ``news.train.jsonl``,
    ``part-1_dev.json``. Substrings do not count: ``latest.json`` is no test file and
    ``train_intervals.json`` a train file (``intervals`` is no ``val``)."""
    words = set(re.split(r"[^a-z0-9]+", Path(file_name).stem.lower()))
    found = [split for split, names in SPLIT_WORDS.items() if words & set(names)]
    if len(found) == 1:
        return found[0]
    problem = f"names several splits ({', '.join(found)})" if found else "has no split word"
    raise PipelineError(
        f"data.split=files: {file_name} {problem}; its name needs exactly one of the words train, val/valid/dev "
        "or test, separated by - _ . or spaces (e.g. news_train.jsonl)"
    )


def limit_samples(split: Split, labels: list, max_train: int | None, max_eval: int | None, seed: int) -> Split:
    """``data.max_train_samples`` / ``max_eval_samples``: a stratified subset of train, and of val and
    of test each, taken after the split (so test records never move into train), class shares kept.
    Multi-label records (``labels`` of tuples): a random subset."""
    multi_label = bool(labels) and isinstance(labels[0], tuple)
    y = np.zeros(len(labels), dtype=np.int64) if multi_label else np.asarray(labels)
    parts = []
    for name, part, limit in (
        ("train", split.train, max_train),
        ("val", split.val, max_eval),
        ("test", split.test, max_eval),
    ):
        key = "data.max_train_samples" if name == "train" else "data.max_eval_samples"
        if limit is not None and limit < 1:
            raise PipelineError(f"{key}={limit}: must be at least 1, or null for all records")
        if limit is None or limit >= len(part):
            parts.append(part)
            continue
        classes = len(np.unique(y[part]))
        if limit < classes:
            raise PipelineError(
                f"{key}={limit}: fewer than the {classes} classes of the {name} split; "
                "a stratified subset needs one record of each"
            )
        kept, _ = train_test_split(part, train_size=limit, stratify=None if multi_label else y[part], random_state=seed)
        parts.append(np.sort(np.asarray(kept, dtype=np.int64)))
    return Split(*parts)
