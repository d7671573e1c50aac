"""The statistics behind comparisons, against scipy's own results, hand-computed cases and, for the
intervals, their coverage on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from finetune_pipeline.evaluation.statistics import (
    accuracy,
    bootstrap_ci,
    holm,
    macro_f1,
    mcnemar_exact,
    paired_bootstrap,
    paired_t,
    per_class_f1_intervals,
    t_interval,
)


def test_t_interval_is_the_student_interval():
    got = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * np.sqrt(2.5) / np.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert got.mean == 3.0 and got.std == pytest.approx(np.sqrt(2.5)) and got.n == 5
    assert got.ci95 == pytest.approx((3.0 - half, 3.0 + half))
    one = t_interval([0.7])
    assert one.mean == 0.7 and one.ci95 is None and one.std is None


def test_paired_t_matches_scipy():
    a, b = [0.81, 0.85, 0.80, 0.88, 0.83], [0.79, 0.84, 0.80, 0.84, 0.80]
    got = paired_t(a, b)
    expected = stats.ttest_rel(a, b)
    assert got.p_value == pytest.approx(expected.pvalue) and got.n_pairs == 5
    assert got.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
    ci = expected.confidence_interval(0.95)
    assert got.ci95 == pytest.approx((ci.low, ci.high))
    same = paired_t([0.5, 0.6], [0.4, 0.5])  # constant difference: no spread, exact
    assert same.mean_difference == pytest.approx(0.1) and same.p_value == 0.0


def test_mcnemar_exact_by_hand():
    correct_a = np.array([True] * 8 + [False] * 2 + [True] * 5)
    correct_b = np.array([False] * 8 + [True] * 2 + [True] * 5)  # 8 only A, 2 only B, 5 both
    only_a, only_b, p = mcnemar_exact(correct_a, correct_b)
    assert (only_a, only_b) == (8, 2)
    assert p == pytest.approx(2 * (1 + 10 + 45) / 1024)  # two-sided binomial(10, 0.5), X <= 2
    assert mcnemar_exact(correct_a, correct_a)[2] == 1.0


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []


def test_macro_f1_equals_scikit_learn_with_absent_classes():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)  # class 3 never occurs
    assert macro_f1(y, p, classes=4) == pytest.approx(
        f1_score(y, p, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    )
    batch = np.stack([y, p])
    assert macro_f1(batch, batch[::-1], classes=4).shape == (2,)  # vectorised over leading axes


def test_bootstrap_intervals_cover_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(200):
        y = np.zeros(300, dtype=int)
        p = np.where(rng.random(300) < 0.8, 0, 1)  # true accuracy 0.8
        ci = bootstrap_ci(y, p, accuracy, seed=i).ci95
        covered += ci[0] <= 0.8 <= ci[1]
    assert 0.90 <= covered / 200 <= 0.99


def test_t_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    covered = sum(
        lo <= 0.85 <= hi for lo, hi in (t_interval(list(rng.normal(0.85, 0.02, 5))).ci95 for _ in range(2000))
    )
    assert 0.93 <= covered / 2000 <= 0.97


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    better = np.where(rng.random(2000) < 0.90, y, (y + 1) % 4)
    worse = np.where(rng.random(2000) < 0.85, y, (y + 1) % 4)
    d = paired_bootstrap(y, better, worse, accuracy)
    assert (
        d.ci95[0] > 0
        and d.p_value < 0.01
        and d.mean_difference == pytest.approx(accuracy(y, better) - accuracy(y, worse))
    )
    twin = np.where(rng.random(2000) < 0.90, y, (y + 1) % 4)
    null = paired_bootstrap(y, better, twin, accuracy)
    assert null.ci95[0] <= 0 <= null.ci95[1] or null.p_value >= 0.01


def test_per_class_f1_intervals_hold_the_point_estimate():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    p = np.where(rng.random(500) < 0.8, y, rng.integers(0, 3, 500))
    for c, (f1, (lo, hi)) in enumerate(per_class_f1_intervals(y, p, 3)):
        assert lo <= f1 <= hi and f1 == pytest.approx(f1_score(y == c, p == c))


def test_two_level_bootstrap_covers_what_a_t_interval_over_seeds_on_one_test_set_misses():
    """Repeats that share one test set: the t-interval over seeds sees the seeds' noise only; the two-level
    bootstrap also the test sample's. Two equally good systems (true difference 0), 100 simulations."""
    from finetune_pipeline.evaluation.statistics import two_level_bootstrap

    rng = np.random.default_rng(11)
    covered_t = covered_two_level = 0
    for i in range(100):
        y = np.zeros(200, dtype=int)
        hard = rng.random(200) < 0.2  # texts both systems tend to get wrong: shared by every seed

        def system(hard=hard):
            return np.stack(
                [np.where(hard, rng.random(200) < 0.3, rng.random(200) < 0.95).astype(int) ^ 1 for _ in range(5)]
            )

        a, b = system(), system()
        t = paired_t(list(accuracy(y, a)), list(accuracy(y, b))).ci95
        two = two_level_bootstrap(y, a, b, accuracy, seed=i).ci95
        covered_t += t[0] <= 0 <= t[1]
        covered_two_level += two[0] <= 0 <= two[1]
    assert covered_two_level >= 90 and covered_two_level >= covered_t
