"""Error analysis of an evaluation: where the classifier goes wrong, for a person and for a program.

    errors.md     the most-confused class pairs (count, share of the true class), the texts with the
                  highest loss (text, true, predicted, score), per-class support and F1 with its 95%
                  bootstrap interval over the texts
    errors.jsonl  one line per misclassified text, highest loss first: text, true and predicted
                  label/symbol, the predicted class's probability, the true class's, the loss

The loss of a text is -log p(true class): a confident mistake costs most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import write_jsonl
from finetune_pipeline.artifacts.markdown import markdown_cell, one_line
from finetune_pipeline.evaluation.statistics import per_class_f1_intervals

HIGHEST_LOSS = 20  # texts listed in errors.md
PAIRS = 10  # confused pairs listed


def text_losses(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) -log p(true class), clipped so a probability of 0 costs a finite 40 nats."""
    return -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-18, 1.0))


def confused_pairs(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> list[dict]:
    """(true, predicted) pairs of different classes, most frequent first; share = of the true class's texts."""
    classes = len(labels)
    matrix = np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)
    support = matrix.sum(axis=1)
    pairs = [(int(matrix[t, p]), t, p) for t in range(classes) for p in range(classes) if t != p and matrix[t, p]]
    return [
        {"true": labels[t], "predicted": labels[p], "count": count, "share_of_true": count / int(support[t])}
        for count, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))
    ]


def write_errors(
    folder: Path,
    texts: list[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    symbols: list[str],
    labels: list[str],
    name: str,
) -> None:
    """errors.md and errors.jsonl into ``folder`` (a temporary folder the caller swaps in whole);
    ``name``: the evaluation's name, for the title."""
    y_pred = probs.argmax(axis=1)
    losses = text_losses(y_true, probs)
    order = np.argsort(-losses, kind="stable")

    def row(i: int) -> dict:
        return {
            "text": texts[i],
            "true_label": labels[y_true[i]],
            "true_symbol": symbols[y_true[i]],
            "predicted_label": labels[y_pred[i]],
            "predicted_symbol": symbols[y_pred[i]],
            "score": float(probs[i, y_pred[i]]),
            "true_probability": float(probs[i, y_true[i]]),
            "loss": float(losses[i]),
        }

    write_jsonl(folder / "errors.jsonl", [row(int(i)) for i in order if y_pred[i] != y_true[i]])
    pairs = confused_pairs(y_true, y_pred, labels)
    per_class = per_class_f1_intervals(y_true, y_pred, len(labels))
    support = np.bincount(y_true, minlength=len(labels))
    wrong = int(np.sum(y_pred != y_true))
    lines = [
        f"# Errors: {markdown_cell(name)}",
        "",
        f"{wrong} of {len(texts)} texts misclassified ({wrong / max(len(texts), 1):.1%}); every one is in "
        "errors.jsonl, highest loss first.",
        "",
        "## Most confused classes",
        "",
        "| true | predicted as | texts | share of the true class |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {markdown_cell(p['true'])} | {markdown_cell(p['predicted'])} | {p['count']} | {p['share_of_true']:.1%} |"
        for p in pairs[:PAIRS]
    ] or ["| - | - | 0 | - |"]
    lines += [
        "",
        f"## The {min(HIGHEST_LOSS, len(texts))} texts with the highest loss (-log p(true class))",
        "",
        "| loss | true | predicted (score) | text |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {losses[i]:.2f} | {markdown_cell(labels[y_true[i]])} | {markdown_cell(labels[y_pred[i]])} "
        f"({probs[i, y_pred[i]]:.2f}) | {markdown_cell(one_line(texts[i]))} |"
        for i in order[:HIGHEST_LOSS]
    ]
    lines += [
        "",
        "## Per class (F1 with its 95% bootstrap interval over these texts)",
        "",
        "| class | symbol | texts | F1 | 95% interval |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {markdown_cell(label)} | {markdown_cell(symbol)} | {int(n)} | {f1:.4f} | "
        + (f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-")
        + " |"
        for label, symbol, n, (f1, ci) in zip(labels, symbols, support, per_class)
    ]
    (folder / "errors.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
