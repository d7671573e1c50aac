"""Intervals and tests for comparing runs, from scipy.stats: every figure with its uncertainty.

- ``t_interval``: mean, std and the 95% t-interval of a metric over repeats (seeds, folds).
- ``paired_t``: the mean of paired differences over matched repeats, its 95% CI and the p-value of
  the paired t-test (``scipy.stats.ttest_rel``).
- ``bootstrap_ci`` / ``paired_bootstrap``: percentile bootstrap over test examples
  (``scipy.stats.bootstrap``, paired resampling of the same examples for a difference), with a
  paired permutation test's p-value (``scipy.stats.permutation_test``, the two systems' answers
  swapped per example).
- ``mcnemar_exact``: McNemar's exact test on the discordant pairs (``scipy.stats.binomtest``).
- ``holm``: Holm's step-down adjustment of p-values for several comparisons at once.

Metrics on examples are vectorised over resamples (``accuracy``, ``macro_f1``: arrays whose last
axis is the examples), so a 2,000-resample bootstrap of 7,600 texts takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float | None  # over repeats; None for one value or a bootstrap
    ci95: tuple[float, float] | None  # None where it cannot be estimated (one repeat, no examples)
    n: int
    method: str  # "t over repeats" | "bootstrap over test examples" | "none"

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "ci95": list(self.ci95) if self.ci95 else None,
            "n": self.n,
            "method": self.method,
        }


@dataclass(frozen=True)
class Difference:
    mean_difference: float
    ci95: tuple[float, float] | None
    p_value: float | None
    n_pairs: int
    test: str


def t_interval(values: list[float]) -> Interval:
    xs = np.asarray(values, dtype=float)
    if len(xs) < 2:
        return Interval(float(xs.mean()) if len(xs) else math.nan, None, None, len(xs), "none")
    std = float(xs.std(ddof=1))
    if std == 0:
        return Interval(float(xs.mean()), 0.0, (float(xs.mean()), float(xs.mean())), len(xs), "t over repeats")
    lo, hi = stats.t.interval(CONFIDENCE, len(xs) - 1, loc=xs.mean(), scale=stats.sem(xs))
    return Interval(float(xs.mean()), std, (float(lo), float(hi)), len(xs), "t over repeats")


def paired_t(a: list[float], b: list[float]) -> Difference:
    """``a - b`` over matched repeats (at least 2 pairs)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.all(d == d[0]):  # no spread: the t statistic is undefined, the difference is exact
        return Difference(
            float(d.mean()), (float(d[0]), float(d[0])), 1.0 if d[0] == 0 else 0.0, len(d), "paired t-test over repeats"
        )
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(CONFIDENCE)
    return Difference(
        float(d.mean()), (float(ci.low), float(ci.high)), float(result.pvalue), len(d), "paired t-test over repeats"
    )


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y_true == y_pred, axis=axis)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1, classes: int | None = None) -> np.ndarray:
    """Macro-F1 over the classes 0..classes-1, vectorised over any leading axes (as scikit-learn's
    ``f1_score(average="macro", zero_division=0)`` for each row)."""
    classes = classes if classes is not None else int(max(np.max(y_true), np.max(y_pred))) + 1
    scores = [per_class_f1(y_true, y_pred, c, axis) for c in range(classes)]
    return np.mean(scores, axis=0)


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, c: int, axis: int = -1) -> np.ndarray:
    tp = np.sum((y_true == c) & (y_pred == c), axis=axis)
    fp = np.sum((y_true != c) & (y_pred == c), axis=axis)
    fn = np.sum((y_true == c) & (y_pred != c), axis=axis)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


MAX_SET_LABELS = 63  # multi-label answers as int64 bit masks (label c is bit c): the paired tests resample them


def label_sets_as_bits(rows: np.ndarray) -> np.ndarray:
    """(N, C) 0/1 rows -> (N,) int64 bit masks, so a text's label set is one value the bootstrap and
    permutation tests can resample like a class id (equal masks: the same set)."""
    return (rows.astype(np.int64) << np.arange(rows.shape[1], dtype=np.int64)).sum(axis=-1)


def label_f1_of_sets(y_true: np.ndarray, y_pred: np.ndarray, c: int, axis: int = -1) -> np.ndarray:
    """F1 of label ``c`` over bit-mask answers (``label_sets_as_bits``), vectorised like ``per_class_f1``."""
    t, p = (y_true >> c) & 1, (y_pred >> c) & 1
    tp, fp, fn = (np.sum(x, axis=axis) for x in (t & p, (1 - t) & p, t & (1 - p)))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def micro_f1_of_sets(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1, labels: int = 1) -> np.ndarray:
    """Micro-F1 over every (text, label) decision of bit-mask answers, vectorised over leading axes."""
    tp = fp = fn = 0
    for c in range(labels):
        t, p = (y_true >> c) & 1, (y_pred >> c) & 1
        tp, fp, fn = (
            tp + np.sum(t & p, axis=axis),
            fp + np.sum((1 - t) & p, axis=axis),
            fn + np.sum(t & (1 - p), axis=axis),
        )
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def macro_f1_of_sets(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1, labels: int = 1) -> np.ndarray:
    """The mean of the labels' F1 over bit-mask answers (scikit-learn's ``average="macro"``)."""
    return np.mean([label_f1_of_sets(y_true, y_pred, c, axis) for c in range(labels)], axis=0)


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, metric, seed: int = 0) -> Interval:
    """``metric(y_true, y_pred)`` and its percentile bootstrap 95% interval over the examples."""
    value = float(metric(y_true, y_pred))
    if len(y_true) < 2:
        return Interval(value, None, None, 1, "none")
    result = stats.bootstrap(
        (y_true, y_pred),
        lambda t, p, axis=-1: metric(t, p, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(value, None, (_finite(ci.low, value), _finite(ci.high, value)), 1, "bootstrap over test examples")


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, metric, seed: int = 0) -> Difference:
    """``metric(a) - metric(b)`` on the same examples: a paired bootstrap 95% interval, and the p-value
    of a paired permutation test (each example's two answers swapped at random)."""
    difference = float(metric(y_true, pred_a) - metric(y_true, pred_b))
    if len(y_true) < 2 or np.array_equal(pred_a, pred_b):
        return Difference(difference, (difference, difference), 1.0, 1, "identical answers")
    rng = np.random.default_rng(seed)

    def diff(t, a, b, axis=-1):
        return metric(t, a, axis=axis) - metric(t, b, axis=axis)

    boot = stats.bootstrap(
        (y_true, pred_a, pred_b),
        diff,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=rng,
    )
    ci = boot.confidence_interval

    def swapped(a, b, axis=-1):  # permutation_type="samples": a and b exchanged within each example
        return metric(y_true, a, axis=axis) - metric(y_true, b, axis=axis)

    perm = stats.permutation_test(
        (pred_a, pred_b),
        swapped,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        random_state=rng,
    )
    return Difference(
        difference,
        (_finite(ci.low, difference), _finite(ci.high, difference)),
        float(perm.pvalue),
        1,
        "paired bootstrap (CI) and paired permutation test (p) over test examples",
    )


def per_class_f1_differences(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, classes: int, seed: int = 0, f1_of=per_class_f1
) -> list[tuple[float, tuple[float, float] | None]]:
    """Per class: F1(a) - F1(b) and its paired bootstrap 95% interval, all classes in one bootstrap.
    ``f1_of``: one class's F1 (``label_f1_of_sets`` for multi-label bit masks)."""

    def differences(t, a, b, axis=-1):
        return np.stack([f1_of(t, a, c, axis) - f1_of(t, b, c, axis) for c in range(classes)])

    values = differences(y_true, pred_a, pred_b)
    if len(y_true) < 2 or np.array_equal(pred_a, pred_b):
        return [(float(v), (float(v), float(v))) for v in values]
    ci = stats.bootstrap(
        (y_true, pred_a, pred_b),
        differences,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return [(float(v), (_finite(lo, v), _finite(hi, v))) for v, lo, hi in zip(values, ci.low, ci.high)]


def per_class_f1_intervals(
    y_true: np.ndarray, y_pred: np.ndarray, classes: int, seed: int = 0
) -> list[tuple[float, tuple[float, float] | None]]:
    """Per class: F1 and its bootstrap 95% interval over the examples, all classes in one bootstrap."""

    def scores(t, p, axis=-1):
        return np.stack([per_class_f1(t, p, c, axis) for c in range(classes)])

    values = scores(y_true, y_pred)
    if len(y_true) < 2:
        return [(float(v), None) for v in values]
    ci = stats.bootstrap(
        (y_true, y_pred),
        scores,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return [(float(v), (_finite(lo, v), _finite(hi, v))) for v, lo, hi in zip(values, ci.low, ci.high)]


def two_level_bootstrap(
    y_true: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, metric, seed: int = 0
) -> Difference:
    """Repeats that share their test texts (one split, several initialisations): the mean over repeats
    of ``metric(a) - metric(b)`` (``preds_*``: (repeats, texts)), with a percentile interval and a
    two-sided p-value from a bootstrap that resamples both the repeats and the texts (a t-interval over
    such repeats would see the seeds' noise only, not the test sample's). The p-value is twice the
    share of resampled differences on the far side of 0, at least 1 / resamples."""
    rng = np.random.default_rng(seed)
    repeats, n = preds_a.shape
    observed = float(np.mean(metric(y_true, preds_a) - metric(y_true, preds_b)))
    draws = []
    for start in range(0, RESAMPLES, 200):  # (200, repeats, texts) at a time: bounded memory
        b = min(200, RESAMPLES - start)
        which = rng.integers(0, repeats, (b, repeats))  # repeats drawn with replacement...
        texts = rng.integers(0, n, (b, n))  # ...and texts, shared by the repeats (they share the test split)
        t = y_true[texts][:, None, :]  # (b, 1, n)
        a = preds_a[which[:, :, None], texts[:, None, :]]  # (b, repeats, n)
        c = preds_b[which[:, :, None], texts[:, None, :]]
        draws.append(np.mean(metric(t, a) - metric(t, c), axis=1))
    draws = np.concatenate(draws)
    low, high = np.percentile(draws, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    p = min(1.0, max(2 * min(np.mean(draws <= 0), np.mean(draws >= 0)), 1 / RESAMPLES))
    return Difference(
        observed,
        (float(low), float(high)),
        float(p),
        repeats,
        "two-level bootstrap over repeats and their shared test texts",
    )


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(A right & B wrong, A wrong & B right, two-sided exact p-value)."""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None): controls the family-wise error rate."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def _finite(value: float, fallback: float) -> float:
    return float(value) if np.isfinite(value) else fallback
