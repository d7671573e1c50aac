"""Encoder + pooling + MLP head, and the head alone over cached features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from finetune_pipeline.config.schema import Pooling


@dataclass(frozen=True)
class HeadConfig:
    """Everything that shapes the head; stored in every checkpoint, so loading never guesses."""

    in_dim: int  # the encoder's hidden size (the pooled text vector)
    hidden_dim: int
    classes: int
    pooling: str  # mean | cls
    dropout: float = 0.0  # at training time; a loaded classifier runs in eval mode

    def build(self) -> nn.Sequential:
        return build_head(self.in_dim, self.hidden_dim, self.classes, self.dropout)


def head_config_of(model: "TextClassifier") -> HeadConfig:
    """The shape of a built classifier's head (dropout aside: a loaded classifier runs in eval mode)."""
    first, last = model.head[1], model.head[-1]  # Linear(in_dim, hidden_dim), Linear(hidden_dim, classes)
    return HeadConfig(first.in_features, first.out_features, last.out_features, Pooling(model.pooling).value)


def build_head(in_dim: int, hidden_dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_classes),
    )


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, T, H) token states -> (B, H) text vectors, ignoring padding."""
    if pooling == Pooling.cls:
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class TextClassifier(nn.Module):
    """Tokens -> logits. ``state_dict`` keys: ``encoder.*`` (the HF model's own names) and ``head.*``.

    With a frozen encoder, ``train()`` keeps the encoder in eval mode (no dropout) and its
    parameters need no gradients.
    """

    def __init__(self, encoder: nn.Module, head: nn.Sequential, pooling: Pooling, frozen: bool):
        super().__init__()
        self.encoder, self.head, self.pooling, self.frozen = encoder, head, pooling, frozen
        if frozen:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "TextClassifier":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]  # (B, T)
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B, T, H)
        return self.head(pool(hidden, mask, self.pooling).float())  # (B, C) logits


class FeatureClassifier(nn.Module):
    """Cached pooled features -> logits: the head of a frozen run. ``state_dict`` keys: ``head.*``."""

    def __init__(self, head: nn.Sequential):
        super().__init__()
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["features"])  # (B, H) -> (B, C)
