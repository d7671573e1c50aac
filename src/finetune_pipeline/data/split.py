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
        listed = ", ".join(f"{name!r} ({n})" for name, n in small.items())
        raise PipelineError(
            f"classes with fewer than {MIN_PER_CLASS} records cannot be split into train/val/test "
            f"with stratification: {listed}; add records or remove the class from data/raw"
        )
    y = np.asarray(labels)
    indices = np.arange(len(y))
    holdout = 1.0 - train_ratio
    try:
        train_idx, rest_idx = train_test_split(indices, test_size=holdout, stratify=y, random_state=seed)
        val_idx, test_idx = train_test_split(
            rest_idx, test_size=(holdout - val_ratio) / holdout, stratify=y[rest_idx], random_state=seed
        )
    except ValueError as e:  # e.g. a split smaller than the number of classes
        raise PipelineError(
            f"cannot split {len(y)} records of {len(counts)} classes with data.train_ratio={train_ratio}, "
            f"data.val_ratio={val_ratio}: {e}"
        ) from None
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)
