"""Jobs grouped into configurations; the best chosen on validation; every other one compared with it.

A configuration is a job's overrides without its repeat keys (``data.seed``, ``training.seed``,
``data.fold``): jobs that differ only there are repeats of one configuration, and jobs of two
configurations with the same repeat keys are *paired* (same split, same initialisation seed).

- Per configuration and metric: n, mean, std and a 95% interval -- a t-interval over the repeats,
  or with one repeat a bootstrap over that job's test examples (``evaluation/test/predictions.jsonl``).
- The best configuration has the best **mean validation** value (the metric the runs selected their
  best epoch by); test figures are reported, never used to choose.
- Each other configuration against the best, per test metric: the paired difference over matched
  repeats with a paired t-test (2+ pairs on different splits: ``data.seed`` repeats), a two-level
  bootstrap over repeats and texts (2+ pairs that all share one test split: ``training.seed``
  repeats), or with one pair a paired bootstrap / permutation test over the shared test examples;
  p-values Holm-adjusted over all comparisons of that metric; verdict "better" / "worse" (adjusted
  p < 0.05) or "not distinguishable at 95%".
- A warning when the validation intervals are wider than the spread of the configurations' means:
  then which configuration is "best" is mostly noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import text_lines
from finetune_pipeline.artifacts.names import EVALUATION_DIR, ID_TO_LABEL_FILE, PREDICTIONS_FILE
from finetune_pipeline.config.differences import is_how_key
from finetune_pipeline.evaluation.statistics import (
    MAX_SET_LABELS,
    Difference,
    Interval,
    accuracy,
    bootstrap_ci,
    holm,
    macro_f1,
    macro_f1_of_sets,
    paired_bootstrap,
    paired_t,
    t_interval,
    two_level_bootstrap,
)

REPEAT_KEYS = ("data.seed", "training.seed", "data.fold")
TEST_METRICS = {"test/accuracy": accuracy, "test/macro_f1": macro_f1}
ALPHA = 0.05


@dataclass
class Predictions:
    """A job's test answers: the texts, true and predicted class ids (multi-label: label sets as bit
    masks, ``evaluation.statistics.label_sets_as_bits``)."""

    texts: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    confidence: np.ndarray  # the predicted class's probability (multi-label: the top label score)
    labels: list[str]  # class id -> label (the run's id_to_label.json)
    symbols: list[str]
    multi_label: bool = False

    @classmethod
    def read(cls, run_dir: Path) -> Predictions:
        """From ``evaluation/test/predictions.jsonl``, class ids as in the run's ``id_to_label.json``."""
        id_to_label = json.loads((run_dir / ID_TO_LABEL_FILE).read_text(encoding="utf-8"))
        entries = [id_to_label[str(i)] for i in range(len(id_to_label))]
        ids = {e["symbol"]: i for i, e in enumerate(entries)}
        path = run_dir / EVALUATION_DIR / "test" / PREDICTIONS_FILE
        rows = [json.loads(line) for line in text_lines(path.read_text(encoding="utf-8")) if line.strip()]
        labels, symbols = [e["label"] for e in entries], [e["symbol"] for e in entries]
        if rows and "true_labels" in rows[0]:
            if len(entries) > MAX_SET_LABELS:
                raise ValueError(f"{len(entries)} labels: paired tests of label sets take at most {MAX_SET_LABELS}")
            bits = [1 << i for i in range(len(entries))]
            return cls(
                [r["text"] for r in rows],
                np.asarray([sum(bits[ids[s]] for s in r["true_symbols"]) for r in rows], dtype=np.int64),
                np.asarray([sum(bits[ids[s]] for s in r["symbols"]) for r in rows], dtype=np.int64),
                np.asarray([max(map(float, r["scores"].values())) for r in rows]),
                labels,
                symbols,
                multi_label=True,
            )
        return cls(
            [r["text"] for r in rows],
            np.asarray([ids[r["true_symbol"]] for r in rows]),
            np.asarray([ids[r["symbol"]] for r in rows]),
            np.asarray([float(r["score"]) for r in rows]),
            labels,
            symbols,
        )

    def metric(self, name: str):
        """The vectorised metric ``name`` over this run's classes (absent ones count, as in its report);
        multi-label: accuracy is subset accuracy (equal masks) and macro-F1 is over the labels."""
        if self.multi_label and name == "test/macro_f1":
            return partial(macro_f1_of_sets, labels=len(self.labels))
        return partial(TEST_METRICS[name], classes=len(self.labels)) if name == "test/macro_f1" else TEST_METRICS[name]


@dataclass
class Repeat:
    """One finished job of a configuration."""

    name: str  # the job's folder, as shown
    key: tuple  # its repeat keys' values: jobs with equal keys are paired across configurations
    val: float | None
    test: dict[str, float | None]
    predictions: Predictions | None = None  # read when a bootstrap needs it


@dataclass
class Configuration:
    overrides: dict[str, str]
    repeats: list[Repeat] = field(default_factory=list)
    shown: tuple[str, ...] | None = None  # the keys that tell it from the others (None: all)

    @property
    def label(self) -> str:
        keys = self.shown if self.shown is not None else tuple(sorted(self.overrides))
        return " ".join(f"{k}={self.overrides[k]}" for k in keys if k in self.overrides) or "(base config)"


def group(jobs: list[tuple[str, dict[str, str], float | None, dict, callable]]) -> list[Configuration]:
    """``(name, overrides, val, test metrics, read predictions)`` of finished jobs -> configurations,
    in order of first appearance."""
    configs: dict[tuple, Configuration] = {}
    for name, overrides, val, test, read in jobs:
        own = {k: v for k, v in overrides.items() if k not in REPEAT_KEYS and not _changes_no_result(k)}
        key = tuple(overrides.get(k) for k in REPEAT_KEYS)
        config = configs.setdefault(tuple(sorted(own.items())), Configuration(own))
        config.repeats.append(Repeat(name, key, val, test, read))
    found = list(configs.values())
    varying = tuple(
        sorted(k for k in {k for c in found for k in c.overrides} if len({c.overrides.get(k) for c in found}) > 1)
    )
    for config in found:  # named by what tells them apart (a single configuration: by all its overrides)
        config.shown = varying if len(found) > 1 else None
    return found


def _changes_no_result(key: str) -> bool:
    """Keys of how a run goes (device, workers, logging, trackers): jobs differing there are one configuration."""
    return is_how_key(key) or key == "logger"


def interval(config: Configuration, metric: str, bounded: bool = True) -> Interval:
    """``bounded``: a share (accuracy, F1) -- the interval is cut to [0, 1], where such a value can lie."""
    found = _interval(config, metric)
    if not bounded or found.ci95 is None:
        return found
    return replace(found, ci95=(max(0.0, found.ci95[0]), min(1.0, found.ci95[1])))


def _interval(config: Configuration, metric: str) -> Interval:
    if metric == "val":
        values = [r.val for r in config.repeats if r.val is not None]
        return t_interval(values)
    values = [r.test.get(metric) for r in config.repeats if r.test.get(metric) is not None]
    if len(values) == 1 and metric in TEST_METRICS:
        predictions = predictions_of(config.repeats[0])
        if predictions is not None:
            return bootstrap_ci(predictions.y_true, predictions.y_pred, predictions.metric(metric))
    return t_interval(values)


def predictions_of(repeat: Repeat) -> Predictions | None:
    if callable(repeat.predictions):
        try:
            repeat.predictions = repeat.predictions()
        except (OSError, ValueError, KeyError, TypeError):
            repeat.predictions = None
    return repeat.predictions


def compare_configurations(a: Configuration, b: Configuration, metric: str) -> Difference | None:
    """``a - b`` on ``metric`` over the repeats they share; None without a shared repeat."""
    b_by_key = {r.key: r for r in b.repeats}
    pairs = [
        (r, b_by_key[r.key])
        for r in a.repeats
        if r.key in b_by_key and r.test.get(metric) is not None and b_by_key[r.key].test.get(metric) is not None
    ]
    if not pairs:
        return None
    if len(pairs) >= 2:
        shared = _shared_test_texts(pairs)
        if shared is not None:  # one split for every repeat: its test sample's noise is not in the repeats' spread
            y, preds_a, preds_b = shared
            return two_level_bootstrap(y, preds_a, preds_b, pairs[0][0].predictions.metric(metric))
        return paired_t([ra.test[metric] for ra, _ in pairs], [rb.test[metric] for _, rb in pairs])
    pa, pb = predictions_of(pairs[0][0]), predictions_of(pairs[0][1])
    if pa is None or pb is None or pa.texts != pb.texts:
        return Difference(
            pairs[0][0].test[metric] - pairs[0][1].test[metric],
            None,
            None,
            1,
            "one pair without shared test predictions: no test possible",
        )
    return paired_bootstrap(pa.y_true, pa.y_pred, pb.y_pred, pa.metric(metric))


def _shared_test_texts(pairs: list[tuple[Repeat, Repeat]]):
    """(y_true, A's answers (repeats, texts), B's) when every repeat of both was tested on the very same
    texts (repeats over training.seed on one split); None when the splits differ or answers are missing."""
    first = predictions_of(pairs[0][0])
    if first is None:
        return None
    answers_a, answers_b = [], []
    for ra, rb in pairs:
        pa, pb = predictions_of(ra), predictions_of(rb)
        if pa is None or pb is None or pa.texts != first.texts or pb.texts != first.texts:
            return None
        answers_a.append(pa.y_pred)
        answers_b.append(pb.y_pred)
    return first.y_true, np.stack(answers_a), np.stack(answers_b)


def summarize(configs: list[Configuration], selected_by: str, lower_is_better: bool = False) -> dict:
    """The summary.json contract: ``configs``, ``best_config``, ``comparisons``, ``warnings``."""
    rows = []
    for config in configs:
        metrics = {selected_by: interval(config, "val", bounded=not selected_by.endswith("loss")).as_dict()}
        metrics.update({m: interval(config, m).as_dict() for m in TEST_METRICS})
        rows.append(
            {
                "config": config.label,
                "overrides": config.overrides,
                "n": len(config.repeats),
                "jobs": [r.name for r in config.repeats],
                "metrics": metrics,
            }
        )
    ranked = [i for i in range(len(configs)) if not _nan(rows[i]["metrics"][selected_by]["mean"])]
    if not ranked:
        return {"configs": rows, "best_config": None, "comparisons": [], "warnings": ["no configuration finished"]}
    pick = min(ranked, key=lambda i: rows[i]["metrics"][selected_by]["mean"] * (1 if lower_is_better else -1))
    best = configs[pick]
    comparisons = []
    for metric in TEST_METRICS:
        found = [(c, compare_configurations(c, best, metric)) for c in configs if c is not best]
        adjusted = holm([d.p_value if d else None for _, d in found])
        for (config, d), p_adjusted in zip(found, adjusted):
            comparisons.append(_comparison(config, best, metric, d, p_adjusted, len(found)))
    return {
        "configs": rows,
        "best_config": {
            "config": best.label,
            "overrides": best.overrides,
            "selected_by": f"{selected_by} mean",
            "value": rows[pick]["metrics"][selected_by]["mean"],
        },
        "comparisons": comparisons,
        "warnings": _warnings(rows, selected_by),
    }


def _comparison(
    config: Configuration, best: Configuration, metric: str, d: Difference | None, p_adjusted: float | None, family: int
) -> dict:
    if d is None:
        return {
            "config": config.label,
            "against": best.label,
            "metric": metric,
            "mean_difference": None,
            "ci95": None,
            "p_value": None,
            "p_value_holm": None,
            "n_pairs": 0,
            "test": "no repeat in common",
            "verdict": "not comparable (no matched repeat)",
        }
    if p_adjusted is None:
        verdict = "not distinguishable at 95% (no test possible)"
    elif p_adjusted < ALPHA:
        verdict = "better" if d.mean_difference > 0 else "worse"
    else:
        verdict = "not distinguishable at 95%"
    return {
        "config": config.label,
        "against": best.label,
        "metric": metric,
        "mean_difference": d.mean_difference,
        "ci95": list(d.ci95) if d.ci95 else None,
        "p_value": d.p_value,
        "p_value_holm": p_adjusted,
        "holm_family": family,
        "n_pairs": d.n_pairs,
        "test": d.test,
        "verdict": verdict,
    }


def _warnings(rows: list[dict], selected_by: str) -> list[str]:
    means = [r["metrics"][selected_by]["mean"] for r in rows if not _nan(r["metrics"][selected_by]["mean"])]
    widths = [
        (r["metrics"][selected_by]["ci95"][1] - r["metrics"][selected_by]["ci95"][0]) / 2
        for r in rows
        if r["metrics"][selected_by]["ci95"]
    ]
    warnings = []
    if len(means) >= 2 and widths and float(np.median(widths)) > max(means) - min(means):
        warnings.append(
            f"the {selected_by} 95% intervals (median half-width {np.median(widths):.4f}) are wider than "
            f"the spread of the configurations' means ({max(means) - min(means):.4f}): which one is best "
            "is mostly noise; add repeats (data.seed=1,2,3,...) or validation data"
        )
    if not widths and len(means) >= 2:
        warnings.append(
            "one repeat per configuration: the choice of the best configuration has no uncertainty "
            "estimate (its validation metric varies with the seed); add data.seed=1,2,3,... to the sweep"
        )
    return warnings


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
