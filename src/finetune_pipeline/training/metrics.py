"""Predictions of a model on a loader, and the per-epoch scores (loss, accuracy, macro-F1, micro-F1).

Multi-label (the loader's labels are (B, C) 0/1 rows): sigmoid scores, binary cross-entropy, a label
predicted where its score reaches 0.5 (the model's per-label thresholds are folded into its logits),
and accuracy is subset accuracy (the whole set right). The full per-class report of a split is
``evaluation/report.py``'s, computed once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from finetune_pipeline.evaluation.multilabel import DEFAULT_THRESHOLD
from finetune_pipeline.model.prepacked import packed_for_a_pass
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.runtime.progress import progress_bar


@dataclass
class Predictions:
    loss: float  # mean cross-entropy per text (multi-label: binary cross-entropy per text and label)
    index: np.ndarray  # (N,) position of each row in the evaluated dataset (batches may be length-sorted)
    y_true: np.ndarray  # (N,); multi-label (N, C) 0/1
    y_pred: np.ndarray  # (N,); multi-label (N, C) 0/1
    probs: np.ndarray  # (N, C) softmax probabilities (multi-label: sigmoid scores), float32

    @property
    def multi_label(self) -> bool:
        return self.y_true.ndim == 2


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, precision: Precision, device: torch.device) -> Predictions:
    was_training = model.training
    model.eval()
    total_loss, index, y_true, probs = 0.0, [], [], []
    bar = progress_bar(len(loader), "evaluating", unit="batch")
    with packed_for_a_pass(model, precision):  # weights change between passes: packed per pass
        for batch in loader:
            bar.update()
            batch = {k: v.to(device) for k, v in batch.items()}
            with precision.autocast():
                logits = model(batch)  # (B, C)
            logits, labels = logits.float(), batch["labels"]
            if labels.is_floating_point():  # multi-label 0/1 rows
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / labels.shape[1]
                probs.append(logits.sigmoid().cpu())
            else:
                loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
                probs.append(logits.softmax(dim=-1).cpu())
            total_loss += loss.item()
            index.append(batch["index"].cpu())
            y_true.append(labels.cpu())
    bar.close()
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
    p, truth = torch.cat(probs), torch.cat(y_true)
    if truth.is_floating_point():
        y, decided = truth.long().numpy(), (p >= DEFAULT_THRESHOLD).long().numpy()
    else:
        y, decided = truth.numpy(), p.argmax(dim=-1).numpy()
    return Predictions(total_loss / max(1, n), torch.cat(index).numpy(), y, decided, p.numpy())


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
    """``{split}/loss``, ``{split}/accuracy``, ``{split}/macro_f1``, ``{split}/micro_f1`` (multi-label:
    accuracy is subset accuracy, and ``{split}/samples_f1`` too).

    Macro averages run over every class of the run (the columns of ``p.probs``), as the evaluation
    report's do, not only over the classes that happen to occur in ``y_true`` or ``y_pred``.
    """
    classes = list(range(p.probs.shape[1]))
    out = {
        f"{split}/loss": p.loss,
        f"{split}/accuracy": float(accuracy_score(p.y_true, p.y_pred)),
        f"{split}/macro_f1": float(f1_score(p.y_true, p.y_pred, labels=classes, average="macro", zero_division=0)),
        f"{split}/micro_f1": float(f1_score(p.y_true, p.y_pred, labels=classes, average="micro", zero_division=0)),
    }
    if p.multi_label:
        out[f"{split}/samples_f1"] = float(f1_score(p.y_true, p.y_pred, average="samples", zero_division=0))
    return out
