"""Scores of multi-label predictions, and the per-label decision thresholds tuned on validation.

``y_true`` is an (N, L) 0/1 matrix, ``probs`` the (N, L) sigmoid scores; a label is predicted where
its score reaches its threshold.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5
THRESHOLD_BOUND = 1e-4  # thresholds kept in [bound, 1 - bound] (model.classifier clips the same way)


CHECK_FOLDS = 5  # a tuned cut must also beat 0.5 on validation texts it was not tuned on


def tune_thresholds(probs: np.ndarray, y_true: np.ndarray, folds: int = CHECK_FOLDS) -> np.ndarray:
    """Per label, the cut that maximises that label's F1 on these (validation) predictions
    (``best_cut``), kept only where such a cut also beats ``DEFAULT_THRESHOLD`` on texts it was not
    tuned on: the texts are cut into ``folds`` folds, and each fold is scored with the cut tuned on
    the others (counts pooled over the folds). Else, and for a label without positives, the label
    keeps ``DEFAULT_THRESHOLD``: a cut tuned on a few hundred texts can fit their noise. ``folds=0``:
    no check."""
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    fold_of = np.random.default_rng(0).permutation(len(probs)) % max(folds, 1)
    for label in range(probs.shape[1]):
        scores, truth = probs[:, label], y_true[:, label].astype(bool)
        if not truth.any():
            continue
        cut = best_cut(scores, truth)
        if folds >= 2 and not _beats_default_held_out(scores, truth, fold_of, folds):
            continue
        thresholds[label] = cut
    return np.clip(thresholds, THRESHOLD_BOUND, 1 - THRESHOLD_BOUND)


def best_cut(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold of best F1 for one label: the midpoint between the score kept and the next lower
    one (ties: the higher threshold)."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    tp = np.cumsum(hits)  # predicting the top k+1 texts positive
    f1 = 2 * tp / (np.arange(1, len(ranked) + 1) + truth.sum())
    distinct = np.append(ranked[1:] != ranked[:-1], True)  # a cut can only fall between two scores
    best = int(np.flatnonzero(distinct)[np.argmax(f1[distinct])])
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float((ranked[best] + below) / 2)


def _beats_default_held_out(scores: np.ndarray, truth: np.ndarray, fold_of: np.ndarray, folds: int) -> bool:
    """Whether cuts tuned on the other folds score a better pooled F1 on each fold than the default cut."""
    tuned, fixed = np.zeros(3), np.zeros(3)  # true positives, false positives, false negatives
    for fold in range(folds):
        held, rest = fold_of == fold, fold_of != fold
        cut = best_cut(scores[rest], truth[rest]) if truth[rest].any() else DEFAULT_THRESHOLD
        for counts, threshold in ((tuned, cut), (fixed, DEFAULT_THRESHOLD)):
            said = scores[held] >= threshold
            counts += [np.sum(said & truth[held]), np.sum(said & ~truth[held]), np.sum(~said & truth[held])]
    f1 = lambda c: 2 * c[0] / max(2 * c[0] + c[1] + c[2], 1)  # noqa: E731
    return f1(tuned) > f1(fixed)


def shifted(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The scores a model with ``thresholds`` folded into its logits gives: sigmoid(logit(p) - logit(t)),
    so that each label's threshold becomes 0.5 (the model does the same on its logits)."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), THRESHOLD_BOUND, 1 - THRESHOLD_BOUND)
    z = np.log(p / (1 - p)) - np.log(t / (1 - t))
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def predicted(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return (probs >= thresholds).astype(np.int64)


def multilabel_scores(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
    """micro / macro / samples F1, subset accuracy, Hamming loss, mean average precision, and per
    label precision / recall / F1 / support (label index -> dict)."""
    # here, not at the top: predict and serve import this module for multilabel_rows, and scikit-learn
    # costs ~0.8 s of their start-up
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    y_pred = predicted(probs, thresholds)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    with_positives = y_true.sum(axis=0) > 0
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
        "subset_accuracy": float((y_pred == y_true).all(axis=1).mean()),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "mean_average_precision": float(
            average_precision_score(y_true[:, with_positives], probs[:, with_positives], average="macro")
        )
        if with_positives.any()
        else 0.0,
        "per_label": {
            int(k): {
                "precision": float(p[k]),
                "recall": float(r[k]),
                "f1": float(f[k]),
                "support": int(support[k]),
                "threshold": float(thresholds[k]),
            }
            for k in range(y_true.shape[1])
        },
    }


def multilabel_rows(
    texts: list[str],
    scores: np.ndarray,
    symbols: list[str],
    labels: list[str],
    y_true: np.ndarray | None = None,
    min_score: float | None = None,
) -> list[dict]:
    """One dict per text: ``labels`` and ``symbols`` (those whose score reaches 0.5, the model's tuned
    threshold, and ``min_score`` if given; possibly none), every label's ``scores``, and the truth if known."""
    cut = max(DEFAULT_THRESHOLD, min_score if min_score is not None else 0.0)
    rows = []
    for i, text in enumerate(texts):
        chosen = [k for k in np.argsort(-scores[i], kind="stable") if scores[i, k] >= cut]
        row: dict = {"text": text}
        if y_true is not None:
            truth = np.flatnonzero(y_true[i])
            row.update(true_labels=[labels[k] for k in truth], true_symbols=[symbols[k] for k in truth])
        row.update(
            labels=[labels[k] for k in chosen],
            symbols=[symbols[k] for k in chosen],
            scores={labels[k]: float(scores[i, k]) for k in range(len(labels))},
        )
        rows.append(row)
    return rows


def per_label_markdown(report: dict, title: str) -> str:
    """The per-label table of a multi-label report (what a confusion matrix is to one label per text)."""
    lines = [
        f"# {title}",
        "",
        f"{report['texts']} texts; micro-F1 {report['micro_f1']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"samples-F1 {report['samples_f1']:.4f}, subset accuracy {report['subset_accuracy']:.4f}, "
        f"Hamming loss {report['hamming_loss']:.4f}, mAP {report['mean_average_precision']:.4f}",
        "",
        "| label | symbol | precision | recall | F1 | support | ECE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in report["per_class"].items():
        name = " ".join(label.split()).replace("|", "\\|")
        lines.append(
            f"| {name} | {row['symbol']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
            f"| {row['support']} | {row['ece']:.3f} |"
        )
    return "\n".join(lines) + "\n"
