"""Two runs, or two configurations' matched repeats, head to head on the same test texts.

    finetune-compare RUN_A RUN_B [--json]
    finetune-compare SWEEP [SWEEP ...] --a model.hidden_dim=256 --b model.hidden_dim=512 [--json]

Each run's answers come from ``evaluation/test/predictions.jsonl``. Runs are paired by their repeat
keys (``data.seed``, ``training.seed``, ``data.fold``: the same split and initialisation); every
pair must have been tested on the same texts (else refused in one line), and the pairs' examples
are pooled. Reported, A minus B:

- accuracy: the difference, its paired bootstrap 95% interval, McNemar's exact test
  (``scipy.stats.binomtest`` on the texts exactly one of them got right);
- macro-F1: the difference, its paired bootstrap interval, a paired permutation test's p-value;
- per class: the F1 difference with its paired bootstrap interval;
- the texts A got right and B wrong (and the reverse), the 20 most confident first.

Multi-label runs: accuracy is subset accuracy (the whole label set right), McNemar's test counts the
texts whose set exactly one of them got right, micro-F1 (over every text-label decision) takes
macro-F1's place, and the per-class rows are per label.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.markdown import one_line
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.evaluation.statistics import (
    accuracy,
    label_f1_of_sets,
    macro_f1,
    mcnemar_exact,
    micro_f1_of_sets,
    paired_bootstrap,
    per_class_f1,
    per_class_f1_differences,
)
from finetune_pipeline.sweep.configurations import REPEAT_KEYS, Predictions
from finetune_pipeline.sweep.jobs import Job

SHOWN = 20  # texts listed each way


@dataclass
class Side:
    name: str  # what the user called it: a run folder or a filter
    jobs: list[Job]


def select(jobs: list[Job], spec: str) -> Side:
    """The finished jobs whose overrides hold every ``key=value`` of ``spec`` (comma-separated)."""
    wanted = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" not in part:
            raise PipelineError(f"--a/--b {spec!r}: expected key=value[,key=value], e.g. model.hidden_dim=256")
        key, value = part.split("=", 1)
        wanted[key.strip()] = value.strip()
    chosen = [j for j in jobs if j.status == "ok" and all(j.overrides.get(k) == v for k, v in wanted.items())]
    if not chosen:
        raise PipelineError(f"--a/--b {spec!r}: no finished job has {', '.join(f'{k}={v}' for k, v in wanted.items())}")
    return Side(spec, chosen)


def pairs(a: Side, b: Side) -> list[tuple[Job, Job]]:
    """Jobs of A and B with the same repeat keys; two single runs pair with each other."""
    if len(a.jobs) == 1 and len(b.jobs) == 1:
        return [(a.jobs[0], b.jobs[0])]
    key = lambda job: tuple(job.overrides.get(k) for k in REPEAT_KEYS)  # noqa: E731
    by_key = {key(j): j for j in b.jobs}
    matched = [(j, by_key[key(j)]) for j in a.jobs if key(j) in by_key]
    if not matched:
        raise PipelineError(f"{a.name} and {b.name} share no repeat ({', '.join(REPEAT_KEYS)}): nothing to pair")
    return matched


def head_to_head(a: Side, b: Side) -> dict:
    matched = pairs(a, b)
    pa, pb = [], []
    for job_a, job_b in matched:
        try:
            left, right = Predictions.read(job_a.folder), Predictions.read(job_b.folder)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(
                f"{job_a.folder} / {job_b.folder}: test predictions unreadable "
                f"(evaluation/test/predictions.jsonl; {type(e).__name__}: {e})"
            ) from None
        if left.texts != right.texts or not np.array_equal(left.y_true, right.y_true):
            raise PipelineError(
                f"{job_a.folder} and {job_b.folder} were tested on different texts "
                f"({len(left.texts)} and {len(right.texts)}; a paired comparison needs the same test "
                "split: the same data and data.seed / data.fold)"
            )
        if left.labels != right.labels:
            raise PipelineError(f"{job_a.folder} and {job_b.folder} have different classes (id_to_label.json)")
        if left.multi_label != right.multi_label:
            raise PipelineError(f"{job_a.folder} and {job_b.folder}: one is multi-label, the other not")
        pa.append(left)
        pb.append(right)
    y = np.concatenate([p.y_true for p in pa])
    ya, yb = np.concatenate([p.y_pred for p in pa]), np.concatenate([p.y_pred for p in pb])
    conf_a, conf_b = np.concatenate([p.confidence for p in pa]), np.concatenate([p.confidence for p in pb])
    texts = [t for p in pa for t in p.texts]
    labels, multi = pa[0].labels, pa[0].multi_label
    f1 = partial(micro_f1_of_sets, labels=len(labels)) if multi else partial(macro_f1, classes=len(labels))
    one_f1 = label_f1_of_sets if multi else per_class_f1
    acc = paired_bootstrap(y, ya, yb, accuracy)  # multi-label: equal bit masks, the whole set right
    only_a, only_b, p_mcnemar = mcnemar_exact(ya == y, yb == y)
    mf1 = paired_bootstrap(y, ya, yb, f1)
    differences = per_class_f1_differences(y, ya, yb, len(labels), f1_of=one_f1)
    per_class = [
        {
            "label": label,
            "symbol": pa[0].symbols[c],
            "support": int(np.sum((y >> c) & 1)) if multi else int(np.sum(y == c)),
            "f1_a": float(one_f1(y, ya, c)),
            "f1_b": float(one_f1(y, yb, c)),
            "difference": difference,
            "ci95": list(ci) if ci else None,
        }
        for c, (label, (difference, ci)) in enumerate(zip(labels, differences))
    ]

    def named(answer: int) -> str:
        if not multi:
            return labels[answer]
        return " + ".join(label for c, label in enumerate(labels) if (answer >> c) & 1) or "(none)"

    def listed(wins: np.ndarray, confidence: np.ndarray, winner: np.ndarray, loser: np.ndarray) -> list[dict]:
        order = np.argsort(-confidence[wins], kind="stable")[:SHOWN]
        rows = np.flatnonzero(wins)[order]
        return [
            {
                "text": texts[i],
                "true": named(int(y[i])),
                "right": named(int(winner[i])),
                "wrong": named(int(loser[i])),
                "confidence": float(confidence[i]),
            }
            for i in rows
        ]

    return {
        "a": a.name,
        "b": b.name,
        "pairs": [[str(ja.folder), str(jb.folder)] for ja, jb in matched],
        "texts": len(y),
        "metric": "test/accuracy",
        "difference": acc.mean_difference,
        "ci95": list(acc.ci95) if acc.ci95 else None,
        "p_value": p_mcnemar,
        "test": "McNemar exact (scipy.stats.binomtest), CI: paired bootstrap over test texts",
        "task": "multi_label" if multi else "single_label",
        "f1_name": "micro-F1" if multi else "macro-F1",  # the F1 of "macro_f1" below
        "accuracy": {
            "a": float(accuracy(y, ya)),
            "b": float(accuracy(y, yb)),
            "a_right_b_wrong": only_a,
            "a_wrong_b_right": only_b,
        },
        "macro_f1": {
            "a": float(f1(y, ya)),
            "b": float(f1(y, yb)),
            "difference": mf1.mean_difference,
            "ci95": list(mf1.ci95) if mf1.ci95 else None,
            "p_value": mf1.p_value,
            "test": "paired permutation test (scipy.stats.permutation_test), CI: paired bootstrap",
        },
        "per_class_f1": per_class,
        "a_right_b_wrong": listed((ya == y) & (yb != y), conf_a, ya, yb),
        "b_right_a_wrong": listed((yb == y) & (ya != y), conf_b, yb, ya),
    }


def render(report: dict) -> str:
    acc, mf1 = report["accuracy"], report["macro_f1"]
    lines = [
        f"A = {report['a']}",
        f"B = {report['b']}",
        f"{len(report['pairs'])} pair(s) of runs, {report['texts']} test texts pooled",
        "",
        f"{'subset accuracy' if report.get('task') == 'multi_label' else 'accuracy'}  A {acc['a']:.4f}  "
        f"B {acc['b']:.4f}  A-B {report['difference']:+.4f} "
        f"[{report['ci95'][0]:+.4f}, {report['ci95'][1]:+.4f}]  McNemar p = {report['p_value']:.3g} "
        f"(A right/B wrong {acc['a_right_b_wrong']}, A wrong/B right {acc['a_wrong_b_right']})",
        f"{report.get('f1_name', 'macro-F1')}  A {mf1['a']:.4f}  B {mf1['b']:.4f}  A-B {mf1['difference']:+.4f} "
        f"[{mf1['ci95'][0]:+.4f}, {mf1['ci95'][1]:+.4f}]  permutation p = {mf1['p_value']:.3g}",
        f"verdict (accuracy): {verdict(report['difference'], report['p_value'])}",
    ]
    if len(report["pairs"]) > 1:
        lines.append(
            "(texts pooled over the pairs: these tests see the test texts' noise, not how much the "
            "difference moves from seed to seed -- the sweep summary's paired test over repeats does)"
        )
    lines += ["", f"per {'label' if report.get('task') == 'multi_label' else 'class'} F1 (A-B):"]
    lines += [
        f"  {c['label']} ({c['support']} texts): {c['f1_a']:.3f} vs {c['f1_b']:.3f}, {c['difference']:+.3f}"
        + (f" [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"] else "")
        for c in report["per_class_f1"]
    ]
    for key, title in (("a_right_b_wrong", "A right, B wrong"), ("b_right_a_wrong", "B right, A wrong")):
        lines += ["", f"{title} (most confident first, {len(report[key])} shown):"]
        lines += [
            f"  [{r['true']}; other said {r['wrong']}; {r['confidence']:.2f}] {one_line(r['text'], 100)}"
            for r in report[key]
        ]
    return "\n".join(lines)


def verdict(difference: float, p_value: float | None) -> str:
    if p_value is None or p_value >= 0.05:
        return "not distinguishable at 95%"
    return "A better" if difference > 0 else "B better"


def side_of_run(folder: Path, job: Job) -> Side:
    if job.status != "ok":
        raise PipelineError(f"{folder}: not a finished run ({job.status}{': ' + job.error if job.error else ''})")
    return Side(str(folder), [job])
