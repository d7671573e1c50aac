"""``data_report.png``: class counts per split, and the token-length histogram with the max_length line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import atomic_path

MOST_CLASSES = 40  # more classes than this: the largest 40 are drawn


def plot_data(classes: dict[str, dict[str, int]], histogram: dict, max_length: int, path: Path, title: str) -> None:
    """``classes``: split -> label -> count; ``histogram``: {"counts", "edges"} of tokens per text."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    totals: dict[str, int] = {}
    for counts in classes.values():
        for label, n in counts.items():
            totals[label] = totals.get(label, 0) + n
    shown = sorted(totals, key=lambda label: -totals[label])[:MOST_CLASSES]
    fig, (bars, lengths) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.22 * len(shown) + 1.5)))
    y = np.arange(len(shown))
    left = np.zeros(len(shown))
    for part, counts in classes.items():  # stacked: train, val, test
        values = np.asarray([counts.get(label, 0) for label in shown])
        bars.barh(y, values, left=left, label=part)
        left += values
    bars.set_yticks(y, [label[:30] for label in shown], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("records")
    bars.set_title(
        "classes per split" + (f" (largest {MOST_CLASSES} of {len(totals)})" if len(totals) > len(shown) else ""),
        fontsize=10,
    )
    bars.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
    lengths.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:gray")
    lengths.axvline(max_length, color="tab:red", linestyle="--", label=f"data.max_length={max_length}")
    lengths.set_xlabel("tokens per text (special tokens included)")
    lengths.set_ylabel("texts")
    lengths.set_title("text lengths", fontsize=10)
    lengths.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.17, right=0.98, bottom=0.27, top=0.86, wspace=0.25)  # fixed: tight_layout costs a draw
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
