"""Stratified train/val/test split with scikit-learn (the seed's step 4)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split

from finetune_pipeline.errors import PipelineError

MIN_PER_CLASS = 3  # one record in each of train, val and test


def stratified_split(
    labels: list[int], train_ratio: float, val_ratio: float, seed: int, names: dict[int, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def split_by_files(files: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, val and test records by the raw part each came from (data.split=files)."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, name in enumerate(files):
        parts[_split_of(name)].append(i)
    for split, indices in parts.items():
        if not indices:
            raise PipelineError(
                f"data.split=files: no raw file for the {split} split among {sorted(set(files))} "
                "(names must contain train, val/valid/dev, or test)"
            )
    return tuple(np.asarray(parts[s]) for s in ("train", "val", "test"))


def _split_of(file_name: str) -> str:
    name = file_name.lower()
    for split, words in (("test", ("test",)), ("val", ("val", "dev")), ("train", ("train",))):
        if any(w in name for w in words):
            return split
    raise PipelineError(
        f"data.split=files: cannot tell which split {file_name} belongs to (its name must contain "
        "train, val/valid/dev, or test)"
    )
