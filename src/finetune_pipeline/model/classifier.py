"""Encoder + pooling + MLP head (the seed's step 6)."""

from __future__ import annotations

import torch
from torch import nn

from finetune_pipeline.config.schema import Pooling


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
    """``state_dict`` keys: ``encoder.*`` (the Hugging Face model's own names) and ``head.*``."""

    def __init__(self, encoder: nn.Module, head: nn.Sequential, pooling: Pooling):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        pooled = pool(hidden, attention_mask, self.pooling)  # (B, H)
        return self.head(pooled.float())  # (B, C) logits


def freeze(encoder: nn.Module) -> None:
    """No gradients for the encoder; the caller keeps it in eval mode (no dropout)."""
    for p in encoder.parameters():
        p.requires_grad_(False)
