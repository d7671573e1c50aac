"""Encoder + pooling + MLP head, and the head alone over cached features."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from finetune_pipeline.config.schema import Pooling
from finetune_pipeline.data.batches import Chunking
from finetune_pipeline.model.top_layers import top_only


@dataclass(frozen=True)
class HeadConfig:
    """Everything that shapes the head; stored in every checkpoint, so loading never guesses."""

    in_dim: int  # the encoder's hidden size (the pooled text vector)
    hidden_dim: int
    classes: int
    pooling: str  # mean | cls
    dropout: float = 0.0  # at training time; a loaded classifier runs in eval mode
    chunk_stride: int | None = None  # data.long_text=chunk: texts are windows sharing this many tokens...
    chunk_pooling: str | None = None  # ...and a text's vector is the mean | max of its windows'; None: truncate
    temperature: float = 1.0  # logits are divided by it (training.calibration=temperature fits it after training)
    multi_label: bool = False  # a sigmoid per label (a set of labels per text), not a softmax over classes
    thresholds: tuple[float, ...] | None = None  # multi-label: each label's decision threshold, tuned on validation

    def __post_init__(self) -> None:
        """A checkpoint or export whose calibration could not have been fitted is refused, not run."""
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"head temperature {self.temperature!r} is not a positive number")
        if self.thresholds is not None:
            values = list(self.thresholds)
            if not self.multi_label or len(values) != self.classes:
                raise ValueError(f"{len(values)} thresholds for a head of {self.classes} labels")
            if not all(isinstance(t, (int, float)) and 0 < t < 1 for t in values):
                raise ValueError("head thresholds must be numbers between 0 and 1")

    def build(self) -> nn.Sequential:
        return build_head(self.in_dim, self.hidden_dim, self.classes, self.dropout)

    def chunking(self) -> Chunking | None:
        return Chunking(self.chunk_stride, self.chunk_pooling) if self.chunk_pooling else None


def calibrated(logits: torch.Tensor, config: HeadConfig) -> torch.Tensor:
    """(B, C) logits divided by the head's temperature (1 during training: the same tensor). Multi-label:
    each label's logit shifted by its threshold's, so that a sigmoid score of 0.5 is its threshold."""
    if config.multi_label:
        if config.thresholds is None:
            return logits
        return logits.float() - torch.tensor(threshold_logits(config.thresholds), device=logits.device)
    return logits if config.temperature == 1.0 else logits / config.temperature


THRESHOLD_BOUND = 1e-4  # thresholds are kept in [bound, 1 - bound]: their logits stay finite


def threshold_logits(thresholds) -> list[float]:
    """logit(t) of each threshold: what ``calibrated`` subtracts (and an export folds into its bias)."""
    clipped = [min(max(float(t), THRESHOLD_BOUND), 1 - THRESHOLD_BOUND) for t in thresholds]
    return [math.log(t / (1 - t)) for t in clipped]


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


def pool_windows(vectors: torch.Tensor, window_doc: torch.Tensor, documents: int, how: str) -> torch.Tensor:
    """(W, H) window vectors -> (documents, H): the mean or the element-wise max of each document's windows."""
    index = window_doc.unsqueeze(1).expand_as(vectors)  # (W, H)
    if how == "max":
        out = torch.full((documents, vectors.shape[1]), float("-inf"), dtype=vectors.dtype, device=vectors.device)
        return out.scatter_reduce(0, index, vectors, reduce="amax", include_self=True)
    total = torch.zeros((documents, vectors.shape[1]), dtype=vectors.dtype, device=vectors.device)
    total = total.scatter_add(0, index, vectors)
    counts = torch.bincount(window_doc, minlength=documents).clamp(min=1).to(vectors.dtype).unsqueeze(1)
    return total / counts


def text_vectors(
    hidden: torch.Tensor, batch: dict[str, torch.Tensor], pooling: Pooling, chunking: Chunking | None
) -> torch.Tensor:
    """(B, T, H) token states -> (documents, H): pooled per row, then per document when chunked."""
    vectors = pool(hidden, batch["attention_mask"], pooling)
    if "window_doc" not in batch:
        return vectors
    return pool_windows(
        vectors, batch["window_doc"], batch["labels"].shape[0], chunking.pooling if chunking else "mean"
    )


class TextClassifier(nn.Module):
    """Tokens -> logits; ``config`` is the head's (what a checkpoint stores). ``state_dict`` keys:
    ``encoder.*`` (the HF model's own names) and ``head.*``.

    With a frozen encoder, ``train()`` keeps the encoder in eval mode (no dropout) and its
    parameters need no gradients. With ``chunking`` a batch row is a window and the logits are per
    document (``window_doc``, from ``data.batches.PadCollator``).
    """

    def __init__(self, encoder: nn.Module, config: HeadConfig, frozen: bool):
        super().__init__()
        self.encoder, self.config, self.frozen = encoder, config, frozen
        self.head = config.build()
        self.pooling, self.chunking = Pooling(config.pooling), config.chunking()
        self.top_from: int | None = None  # adapter=top_layers: batches of cached states enter this layer
        if frozen:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TextClassifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]  # (B, T)
        if "hidden" in batch:  # cached states of the frozen bottom layers: run the top layers only
            with top_only(self.encoder, self.top_from):
                hidden = self.encoder(inputs_embeds=batch["hidden"], attention_mask=mask).last_hidden_state
        else:
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B, T, H)
        return calibrated(self.head(text_vectors(hidden, batch, self.pooling, self.chunking).float()), self.config)


class FeatureClassifier(nn.Module):
    """Cached pooled features -> logits: the head of a frozen run. ``state_dict`` keys: ``head.*``."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config, self.head = config, config.build()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return calibrated(self.head(batch["features"]), self.config)  # (B, H) -> (B, C)
