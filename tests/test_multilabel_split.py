"""Iterative stratification of multi-label records: every label in every split, shares kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune_pipeline.data.multilabel_split import iterative_split
from finetune_pipeline.errors import PipelineError


def random_label_sets(n: int, labels: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    frequency = np.linspace(0.02, 0.4, labels)  # from rare to common
    return [[k for k in range(labels) if rng.random() < frequency[k]] for _ in range(n)]


def test_label_shares_follow_the_ratios_better_than_a_random_split():
    sets = random_label_sets(1000, 12, 0)
    split = iterative_split(sets, 0.8, 0.1, seed=1, names={k: str(k) for k in range(12)})
    assert sorted(np.concatenate(list(split)).tolist()) == list(range(1000))  # a partition
    assert [len(p) for p in split] == pytest.approx([800, 100, 100], abs=15)

    def worst_share_error(parts) -> float:
        errors = []
        for k in range(12):
            total = sum(k in s for s in sets)
            for part, ratio in zip(parts, (0.8, 0.1, 0.1)):
                errors.append(abs(sum(k in sets[i] for i in part) / total - ratio))
        return max(errors)

    rng = np.random.default_rng(2)
    order = rng.permutation(1000)
    random_parts = (order[:800], order[800:900], order[900:])
    assert worst_share_error(split) < 0.03 < worst_share_error(random_parts)
    assert iterative_split(sets, 0.8, 0.1, 1, {k: str(k) for k in range(12)}).train.tolist() == split.train.tolist()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(30, 120), st.integers(2, 6))
def test_every_label_with_three_records_is_in_every_split(seed, n, labels):
    sets = random_label_sets(n, labels, seed)
    counts = [sum(k in s for s in sets) for k in range(labels)]
    keep = [k for k in range(labels) if counts[k] >= 3]
    sets = [[k for k in s if k in keep] for s in sets]
    split = iterative_split(sets, 0.7, 0.15, seed, {k: str(k) for k in range(labels)})
    for part in split:
        assert {k for i in part for k in sets[i]} == set(keep)


def test_a_label_with_too_few_records_is_named():
    with pytest.raises(PipelineError, match=r"labels with fewer than 3 records .*'Sport' \(2\)"):
        iterative_split([[0], [0], [1], [1], [1]], 0.6, 0.2, 0, {0: "Sport", 1: "World"})
