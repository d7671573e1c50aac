"""The training loss: cross-entropy, optionally class-weighted and label-smoothed; multi-label: binary
cross-entropy per label, ``balanced`` weighting each label's positives by its negatives (``pos_weight``).

Validation and test losses stay plain (binary) cross-entropy, so they compare across these settings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from finetune_pipeline.config.schema import ClassWeights

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, C) logits, (B,) labels -> scalar


def class_weights(train_labels: list[int], num_classes: int, mode: ClassWeights) -> torch.Tensor | None:
    """``balanced``: n / (k * n_c) per class (scikit-learn's formula); a class absent from train gets 0."""
    if mode == ClassWeights.none:
        return None
    counts = torch.bincount(torch.tensor(train_labels, dtype=torch.long), minlength=num_classes).double()
    weights = torch.where(counts > 0, len(train_labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()  # (C,)


def positive_weights(train_rows: list, num_labels: int, mode: ClassWeights) -> torch.Tensor | None:
    """Multi-label ``balanced``: per label, its negatives / positives in train (BCE's ``pos_weight``);
    a label without positives gets 1."""
    if mode == ClassWeights.none:
        return None
    y = torch.from_numpy(np.asarray(train_rows, dtype=np.float64).reshape(-1, num_labels))
    positives = y.sum(dim=0)
    return torch.where(positives > 0, (len(y) - positives) / positives.clamp(min=1), torch.ones_like(positives)).float()


def training_loss(weights: torch.Tensor | None, label_smoothing: float, multi_label: bool = False) -> Loss:
    """``weights``: per-class weights, or (multi-label) per-label positive weights."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = weights.to(logits.device) if weights is not None else None
        if multi_label:
            targets = labels * (1 - label_smoothing) + 0.5 * label_smoothing
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=w)
        return nn.functional.cross_entropy(logits.float(), labels, weight=w, label_smoothing=label_smoothing)

    return loss
