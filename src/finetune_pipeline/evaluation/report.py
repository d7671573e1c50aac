"""The evaluation report of a run on labelled texts: metrics, confusion matrix (JSON + PNG), predictions.

Written by ``train.py`` for the test split (``<run>/evaluation/test/``) and by
``finetune-pipeline evaluate`` for any labelled file (``<run>/evaluation/<name>/``):

    report.json            accuracy, macro/weighted precision, recall and F1, per-class P/R/F1/support
    confusion_matrix.json  {"labels", "symbols", "matrix"}: rows are true classes, columns predicted
    confusion_matrix.png   the same as an image (row-normalised colours, counts in the cells)
    predictions.jsonl      one line per text: text, true and predicted label/symbol, top-k scores
    errors.md, errors.jsonl  error analysis: most-confused pairs, highest-loss texts, per-class F1 with
                           its 95% interval (``evaluation/errors.py``)
    calibration.png        reliability diagram (accuracy against top score, 15 bins; report.json
                           "calibration") | risk-coverage curve (accuracy of the most confident
                           texts kept; report.json "risk_coverage", with the --min-score that keeps them)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import atomic_dir, atomic_path, write_json, write_jsonl
from finetune_pipeline.artifacts.names import PREDICTIONS_FILE
from finetune_pipeline.evaluation.calibration import ece, label_ece, reliability, risk_coverage
from finetune_pipeline.evaluation.multilabel import (
    DEFAULT_THRESHOLD,
    multilabel_rows,
    multilabel_scores,
    per_label_markdown,
)

TOP_K = 5
ANNOTATE_UP_TO = 30  # classes; beyond that the image has no per-cell numbers or tick labels


def build_report(y_true: np.ndarray, y_pred: np.ndarray, symbols: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support  # predict needs none of it

    ids = list(range(len(symbols)))
    report = {"texts": len(y_true), "accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
        report.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    report["per_class"] = {
        labels[i]: {
            "symbol": symbols[i],
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i in ids
    }
    return report


def confusion(y_true: np.ndarray, y_pred: np.ndarray, symbols: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(symbols))))
    return {
        "labels": labels,
        "symbols": symbols,
        "rows": "true class",
        "columns": "predicted class",
        "matrix": matrix.tolist(),
    }


def prediction_rows(
    texts: list[str],
    probs: np.ndarray,
    symbols: list[str],
    labels: list[str],
    y_true: np.ndarray | None = None,
    top_k: int = TOP_K,
    min_score: float | None = None,
) -> list[dict]:
    """One dict per text: the predicted label and symbol, its score, the top-k, and the truth if known.
    ``min_score``: below it the text is not answered: ``label`` and ``symbol`` are null (abstention)."""
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    rows = []
    for i, text in enumerate(texts):
        best = int(top[i, 0])
        row = {"text": text}
        if y_true is not None:
            row.update(true_label=labels[int(y_true[i])], true_symbol=symbols[int(y_true[i])])
        answered = min_score is None or probs[i, best] >= min_score
        row.update(
            label=labels[best] if answered else None,
            symbol=symbols[best] if answered else None,
            score=float(probs[i, best]),
            top_k=[{"label": labels[c], "symbol": symbols[c], "score": float(probs[i, c])} for c in top[i]],
        )
        rows.append(row)
    return rows


def write_evaluation(
    folder: Path, texts: list[str], y_true: np.ndarray, probs: np.ndarray, symbols: list[str], labels: list[str]
) -> dict:
    """Write the report's files into ``folder`` (replaced as a whole); returns the report. Multi-label
    (``y_true`` of (N, C) 0/1 rows, ``probs`` the model's per-label scores): ``write_multilabel``."""
    if y_true.ndim == 2:
        return write_multilabel(folder, texts, y_true, probs, symbols, labels)
    y_pred = probs.argmax(axis=1)
    report = build_report(y_true, y_pred, symbols, labels)
    report["calibration"] = {"ece": ece(probs, y_true), "bins": reliability(probs, y_true)}
    report["risk_coverage"] = risk_coverage(probs, y_true)
    matrix = confusion(y_true, y_pred, symbols, labels)
    with atomic_dir(folder) as tmp:
        write_json(tmp / "report.json", report)
        write_json(tmp / "confusion_matrix.json", matrix)
        plot_confusion(
            np.asarray(matrix["matrix"]),
            list(labels),  # the original labels: a symbol (a, b, ..) means nothing to a reader
            tmp / "confusion_matrix.png",
            f"{folder.name}: accuracy {report['accuracy']:.3f}, "
            f"macro-F1 {report['macro_f1']:.3f} ({report['texts']} texts)",
        )
        plot_calibration(
            report["calibration"]["bins"],
            report["risk_coverage"],
            tmp / "calibration.png",
            f"{folder.name}: ECE {report['calibration']['ece']:.3f} ({report['texts']} texts)",
        )
        write_jsonl(tmp / PREDICTIONS_FILE, prediction_rows(texts, probs, symbols, labels, y_true))
        from finetune_pipeline.evaluation.errors import write_errors  # scipy: not for predict's start-up

        write_errors(tmp, texts, y_true, probs, symbols, labels, folder.name)
    return report


def scores_report(y_true: np.ndarray, probs: np.ndarray, symbols: list[str], labels: list[str]) -> dict:
    """The report's figures without its files: ``build_report`` of the top class, or (``y_true`` of
    (N, C) 0/1 rows) ``multilabel_report``."""
    if y_true.ndim == 2:
        return multilabel_report(y_true, probs, symbols, labels)
    return build_report(y_true, probs.argmax(axis=1), symbols, labels)


def multilabel_report(y_true: np.ndarray, scores: np.ndarray, symbols: list[str], labels: list[str]) -> dict:
    """micro / macro / samples / weighted F1, subset accuracy (as ``accuracy``), Hamming loss, mAP, and
    per label P/R/F1/support and ECE. A label is predicted where its score reaches 0.5: the model's
    tuned threshold is folded into its scores."""
    from sklearn.metrics import precision_recall_fscore_support

    thresholds = np.full(len(labels), DEFAULT_THRESHOLD)
    found = multilabel_scores(y_true, scores, thresholds)
    eces = label_ece(scores, y_true)
    _, _, weighted, _ = precision_recall_fscore_support(
        y_true, (scores >= DEFAULT_THRESHOLD).astype(np.int64), average="weighted", zero_division=0
    )
    return {
        "texts": len(y_true),
        "task": "multi_label",
        **{k: v for k, v in found.items() if k != "per_label"},
        "accuracy": found["subset_accuracy"],
        "weighted_f1": float(weighted),
        "per_class": {
            labels[k]: {"symbol": symbols[k], **_without_threshold(row), "ece": float(eces[k])}
            for k, row in found["per_label"].items()
        },
        "calibration": {"ece": float(np.mean(eces)) if len(eces) else 0.0, "per_label": True},
    }


def write_multilabel(
    folder: Path, texts: list[str], y_true: np.ndarray, scores: np.ndarray, symbols: list[str], labels: list[str]
) -> dict:
    """report.json (``multilabel_report``), per_label.md (its table) and predictions.jsonl."""
    report = multilabel_report(y_true, scores, symbols, labels)
    with atomic_dir(folder) as tmp:
        write_json(tmp / "report.json", report)
        (tmp / "per_label.md").write_text(per_label_markdown(report, folder.name), encoding="utf-8")
        write_jsonl(tmp / PREDICTIONS_FILE, multilabel_rows(texts, scores, symbols, labels, y_true))
    return report


def _without_threshold(row: dict) -> dict:
    """The scores shown carry the tuned thresholds (0.5 is each label's): the raw cut is in metrics.json."""
    return {k: v for k, v in row.items() if k != "threshold"}


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    n = len(names)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # row-normalised: recall on the diagonal
    size = min(4 + 0.5 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if n <= ANNOTATE_UP_TO:
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_calibration(bins: list[dict], coverage: list[dict], path: Path, title: str) -> None:
    """Reliability diagram (left: accuracy per top-score bin against the diagonal) and risk-coverage
    curve (right: accuracy of the most confident texts kept)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([0, 1], [0, 1], color="tab:gray", linestyle="--", linewidth=1, label="calibrated")
    left.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["high"] - b["low"] for b in bins],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    left.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o",
        color="tab:red",
        markersize=3,
        label="mean top score",
    )
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="top score", ylabel="accuracy", title="reliability")
    left.legend(fontsize=8, loc="upper left")
    right.plot([c["coverage"] for c in coverage], [c["accuracy"] for c in coverage], "o-")
    right.set(
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        xlabel="coverage (share of texts answered)",
        ylabel="accuracy of the answered",
        title="risk-coverage",
    )
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.85, wspace=0.25)  # fixed: tight_layout costs a draw
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
