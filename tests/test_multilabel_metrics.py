"""Multi-label scores and per-label thresholds tuned on validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from finetune_pipeline.evaluation.multilabel import DEFAULT_THRESHOLD, multilabel_scores, predicted, tune_thresholds


def noisy_scores(n: int, labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype(np.int64)
    logits = 1.5 * (2 * y - 1) + rng.normal(0, 1.2, (n, labels)) - 1.0  # shifted: 0.5 is not the best cut
    return y, 1 / (1 + np.exp(-logits))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 60))
def test_a_tuned_threshold_gives_the_best_f1_any_cut_could(seed, n):
    y, probs = noisy_scores(n, 3, seed)
    thresholds = tune_thresholds(probs, y, folds=0)  # the cut alone, without the held-out check
    for label in range(3):
        if not y[:, label].any():
            assert thresholds[label] == DEFAULT_THRESHOLD
            continue
        tuned = f1_score(y[:, label], probs[:, label] >= thresholds[label], zero_division=0)
        best = max(f1_score(y[:, label], probs[:, label] >= t, zero_division=0) for t in probs[:, label])
        assert tuned == pytest.approx(best)


def test_tuned_thresholds_beat_a_fixed_half_on_held_out_texts():
    y_val, p_val = noisy_scores(400, 5, 0)
    y_test, p_test = noisy_scores(400, 5, 1)
    tuned = multilabel_scores(y_test, p_test, tune_thresholds(p_val, y_val))
    fixed = multilabel_scores(y_test, p_test, np.full(5, DEFAULT_THRESHOLD))
    assert tuned["micro_f1"] > fixed["micro_f1"] and tuned["macro_f1"] > fixed["macro_f1"]


def test_a_cut_that_only_fits_the_validation_noise_is_not_kept():
    """Positives score above 0.5 and negatives below, 10% of labels flipped: 0.5 is the best cut, yet a
    cut tuned on 80 texts moves (it fits their noise). The held-out check keeps 0.5 for most labels,
    and on new texts does at least as well as the unchecked cuts."""
    rng = np.random.default_rng(3)

    def separated(n):
        y = (rng.random((n, 8)) < 0.4).astype(np.int64)
        p = np.where(y == 1, 0.5 + rng.random((n, 8)) / 2, rng.random((n, 8)) / 2)
        flipped = rng.random((n, 8)) < 0.1
        return np.where(flipped, 1 - y, y), p

    y_val, p_val = separated(80)
    y_test, p_test = separated(20_000)
    checked, unchecked = tune_thresholds(p_val, y_val), tune_thresholds(p_val, y_val, folds=0)
    assert np.sum(np.abs(unchecked - DEFAULT_THRESHOLD) > 1e-3) >= 6 and np.sum(checked == DEFAULT_THRESHOLD) >= 5
    score = lambda t: multilabel_scores(y_test, p_test, t)["micro_f1"]  # noqa: E731
    assert score(checked) >= score(unchecked) - 1e-3


def test_the_scores_are_scikit_learns_and_a_hand_count():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.7], [0.4, 0.8, 0.1], [0.6, 0.3, 0.2], [0.1, 0.1, 0.6]])
    scores = multilabel_scores(y, probs, np.full(3, 0.5))
    y_pred = predicted(probs, np.full(3, 0.5))  # [[1,0,1],[0,1,0],[1,0,0],[0,0,1]]
    assert scores["subset_accuracy"] == 0.5 and scores["hamming_loss"] == pytest.approx(2 / 12)
    assert scores["micro_f1"] == pytest.approx(f1_score(y, y_pred, average="micro"))
    assert scores["micro_f1"] == pytest.approx(2 * 4 / (5 + 5))  # 4 true positives, 5 predicted, 5 true
    assert scores["per_label"][1] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
        "threshold": 0.5,
    }
    assert 0 < scores["mean_average_precision"] <= 1
