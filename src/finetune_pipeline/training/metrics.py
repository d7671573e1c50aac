"""Predictions of a model on a loader, and the per-epoch scores (loss, accuracy, macro-F1).

The full per-class report of a split is ``evaluation/report.py``'s, computed once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision


@dataclass
class Predictions:
    loss: float  # mean cross-entropy per text
    index: np.ndarray  # (N,) position of each row in the evaluated dataset (batches may be length-sorted)
    y_true: np.ndarray  # (N,)
    y_pred: np.ndarray  # (N,)
    probs: np.ndarray  # (N, C) softmax probabilities, float32


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, precision: Precision, device: torch.device) -> Predictions:
    was_training = model.training
    model.eval()
    total_loss, index, y_true, probs = 0.0, [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with precision.autocast():
            logits = model(batch)  # (B, C)
        logits = logits.float()
        total_loss += nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
        index.append(batch["index"].cpu())
        y_true.append(batch["labels"].cpu())
        probs.append(logits.softmax(dim=-1).cpu())
    model.train(was_training)
    if not y_true:  # under torchrun a rank can be left without validation batches
        return Predictions(
            0.0,
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros((0, 0), dtype=np.float32),
        )
    n = sum(len(t) for t in y_true)
    p = torch.cat(probs)
    return Predictions(
        total_loss / max(1, n), torch.cat(index).numpy(), torch.cat(y_true).numpy(), p.argmax(dim=-1).numpy(), p.numpy()
    )


def gather(p: Predictions, dist: Dist) -> Predictions:
    """All ranks' predictions (each rank evaluated its share of the batches), on every rank."""
    if not dist.enabled:
        return p
    parts = [q for q in dist.all_gather(p) if len(q.y_true)]
    sizes = [len(q.y_true) for q in parts]
    loss = sum(q.loss * n for q, n in zip(parts, sizes)) / max(1, sum(sizes))
    return Predictions(
        loss, *(np.concatenate([getattr(q, name) for q in parts]) for name in ("index", "y_true", "y_pred", "probs"))
    )


def scores(p: Predictions, split: str) -> dict[str, float]:
    """``{split}/loss``, ``{split}/accuracy``, ``{split}/macro_f1``.

    Macro averages run over every class of the run (the columns of ``p.probs``), as the evaluation
    report's do, not only over the classes that happen to occur in ``y_true`` or ``y_pred``.
    """
    classes = list(range(p.probs.shape[1]))
    return {
        f"{split}/loss": p.loss,
        f"{split}/accuracy": float(accuracy_score(p.y_true, p.y_pred)),
        f"{split}/macro_f1": float(f1_score(p.y_true, p.y_pred, labels=classes, average="macro", zero_division=0)),
    }
