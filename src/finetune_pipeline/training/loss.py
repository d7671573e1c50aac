"""The training loss: cross-entropy, optionally class-weighted and label-smoothed.

Validation and test losses stay plain cross-entropy, so they compare across these settings.
"""

from __future__ import annotations

from collections.abc import Callable

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


def training_loss(weights: torch.Tensor | None, label_smoothing: float) -> Loss:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = weights.to(logits.device) if weights is not None else None
        return nn.functional.cross_entropy(logits.float(), labels, weight=w, label_smoothing=label_smoothing)

    return loss
