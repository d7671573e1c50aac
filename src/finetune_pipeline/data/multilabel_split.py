"""Train/val/test split of multi-label records: iterative stratification (Sechidis, Tsoumakas and
Vlahavas, 2011), so each label keeps its share in every split.

The rarest label is placed first: each of its unplaced records goes to the split that still wants
most of that label (ties: the split that wants most records, then the seed), and every split's
wants shrink by what the record carries. Then the next rarest label, until every record is placed
(records without a label go where most records are still wanted). A label with at least 3 records
ends in train, val and test: where the shares round one out, a record of it moves from the split
holding most of it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import PipelineError


def iterative_split(
    label_sets: list[list[int]], train_ratio: float, val_ratio: float, seed: int, names: dict[int, str]
) -> Split:
    """``label_sets``: each record's label ids (possibly none). ``names``: label id -> readable name."""
    ratios = [train_ratio, val_ratio, 1.0 - train_ratio - val_ratio]
    return Split(*iterative_parts(label_sets, ratios, seed, names, "train/val/test"))


def iterative_parts(
    label_sets: list[list[int]], shares: list[float], seed: int, names: dict[int, str], parts_named: str
) -> list[np.ndarray]:
    """The records cut into ``len(shares)`` parts (sorted index arrays), every label in each part."""
    counts = Counter(label for labels in label_sets for label in set(labels))
    small = {names[label]: n for label, n in sorted(counts.items()) if n < len(shares)}
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(small.items())[:10])
        raise PipelineError(
            f"labels with fewer than {len(shares)} records cannot be split into {parts_named}: "
            f"{listed}; add records or remove the label"
        )
    rng = np.random.RandomState(seed)
    ratios = np.asarray(shares, dtype=float)
    wanted = ratios * len(label_sets)  # records each split still wants
    wanted_of = {label: ratios * n for label, n in counts.items()}  # per label
    parts: list[list[int]] = [[] for _ in ratios]
    unplaced = set(range(len(label_sets)))
    holders: dict[int, list[int]] = {label: [] for label in counts}
    for i, labels in enumerate(label_sets):
        for label in set(labels):
            holders[label].append(i)
    remaining = Counter(counts)
    while remaining:
        fewest = min(remaining.values())
        tied = sorted(lab for lab, n in remaining.items() if n == fewest)
        label = tied[rng.randint(len(tied))]
        members = [i for i in holders[label] if i in unplaced]
        rng.shuffle(members)
        for i in members:
            j = _choose(wanted_of[label], wanted, rng)
            parts[j].append(i)
            unplaced.discard(i)
            wanted[j] -= 1
            for other in set(label_sets[i]):
                wanted_of[other][j] -= 1
                remaining[other] -= 1
        remaining = +remaining  # drop labels with nothing left to place
    for i in sorted(unplaced, key=lambda _: rng.rand()):  # records without a label
        j = int(np.argmax(wanted + rng.rand(len(ratios)) * 1e-9))
        parts[j].append(i)
        wanted[j] -= 1
    _every_label_everywhere(parts, label_sets, counts, rng)
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _choose(wanted_of_label: np.ndarray, wanted: np.ndarray, rng: np.random.RandomState) -> int:
    """The split that wants most of the label, then most records, then one by the seed."""
    best = np.flatnonzero(wanted_of_label == wanted_of_label.max())
    if len(best) > 1:
        best = best[wanted[best] == wanted[best].max()]
    return int(best[rng.randint(len(best))])


def _every_label_everywhere(
    parts: list[list[int]], label_sets: list[list[int]], counts: Counter, rng: np.random.RandomState
) -> None:
    """Move single records so that every label has one in each split (from the split holding most of it)."""
    for label in sorted(counts):
        for target in range(len(parts)):
            if any(label in label_sets[i] for i in parts[target]):
                continue
            donor = max(range(len(parts)), key=lambda k: sum(label in label_sets[i] for i in parts[k]))
            members = [i for i in parts[donor] if label in label_sets[i]]
            moved = members[rng.randint(len(members))]
            parts[donor].remove(moved)
            parts[target].append(moved)


def require_every_label(split: Split, label_sets: list[list[int]], names: dict[int, str], context: str) -> None:
    """Every label in train, val and test: else it is never validated or tested (refused)."""
    for part, indices in zip(("train", "val", "test"), split):
        present = {label for i in indices for label in label_sets[i]}
        missing = sorted(set(names) - present)
        if missing:
            listed = ", ".join(repr(names[c]) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise PipelineError(
                f"{context}: the {part} split has no record of {listed}; every label needs "
                "records in train, val and test (or use data.split=stratified)"
            )
