"""How far scores are from being probabilities, and what abstaining below a score buys.

- ``ece``: expected calibration error over ``BINS`` equal-width bins of the top score (the share of
  texts in a bin times |accuracy - mean top score| there, summed);
- ``reliability``: those bins (for the diagram);
- ``risk_coverage``: the accuracy of the texts kept when only the most confident share is answered.
"""

from __future__ import annotations

import numpy as np

BINS = 15
COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of the top-1 scores, ``probs`` (N, C)."""
    if len(y_true) == 0:
        return 0.0
    return float(
        sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, y_true, bins)) / len(y_true)
    )


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin of the top score: its range, texts, mean top score and accuracy."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # (0, 1/15] is bin 0
    out = []
    for b in range(bins):
        members = which == b
        if members.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(members.sum()),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return out


def risk_coverage(probs: np.ndarray, y_true: np.ndarray, coverages: tuple[float, ...] = COVERAGES) -> list[dict]:
    """For each coverage: the texts answered (the most confident share), their accuracy, and the
    score threshold that keeps them (``predict --min-score``)."""
    if len(y_true) == 0:
        return []
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for coverage in coverages:
        kept = max(1, round(coverage * len(order)))
        rows.append(
            {
                "coverage": kept / len(order),
                "texts": kept,
                "accuracy": float(correct[order[:kept]].mean()),
                "min_score": float(confidence[order[kept - 1]]),
            }
        )
    return rows


def label_ece(scores: np.ndarray, y_true: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Multi-label: each label's ECE, its (N,) scores read as the probability that the label applies."""
    out = np.zeros(scores.shape[1])
    for k in range(scores.shape[1]):
        p = scores[:, k].astype(np.float64)
        out[k] = ece(np.stack([1 - p, p], axis=1), y_true[:, k].astype(np.int64), bins)
    return out


def rescaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` as the model divided by ``temperature`` gives them: softmax(log p / T) (the log
    differs from the logits by a constant per row, which softmax ignores). Temperature 1 gives them
    back as they are (the round trip through log and exp would move them by float rounding)."""
    if temperature == 1.0:
        return probs.astype(np.float32)  # a copy, as otherwise
    logits = np.log(np.clip(probs.astype(np.float64), 1e-300, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    if len(y_true) == 0:
        return 0.0
    return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true].astype(np.float64), 1e-300, None)).mean())
