"""``adapter=top_layers``: the token states entering the first trained layer, computed once per text
and cached (``data/cache/states/<key>.pt``), and the batches the top layers train on.

The key is the feature cache's (encoder weights, tokenizer, max_length, precision, texts) plus the
layer index and the storage dtype. States are stored flat, ``(sum of text lengths, H)``, in
``adapter.top_layers.cache_dtype`` (fp16 by default: half of fp32's bytes; bf16 and fp32 are the others).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from finetune_pipeline.backbone.identity import config_sha256
from finetune_pipeline.config.schema import TrainingConfig
from finetune_pipeline.data.batches import (
    LengthGroupedBatchSampler,
    TokenizedTexts,
    eval_loader,
    label_tensor,
    sorted_batches,
)
from finetune_pipeline.features.cache import TokenStateCache, feature_key, texts_sha256, tokenizer_sha256
from finetune_pipeline.features.encode import EncodeStats
from finetune_pipeline.model.prepacked import packed_for_a_pass
from finetune_pipeline.model.top_layers import bottom_only
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@torch.inference_mode()
def encode_bottom(
    encoder: nn.Module,
    first_top: int,
    data: TokenizedTexts,
    precision: Precision,
    device: torch.device,
    batch_size: int,
    max_tokens: int,
    pad_token_id: int,
    dtype: torch.dtype,
) -> tuple[tuple[torch.Tensor, torch.Tensor], EncodeStats]:
    """(states, lengths) of every text, in dataset order: the output of layer ``first_top - 1``."""
    encoder.eval()
    loader = eval_loader(data, batch_size, num_workers=0, pad_token_id=pad_token_id, max_tokens=max_tokens)
    rows: list[torch.Tensor | None] = [None] * len(data)
    stats = EncodeStats(len(data), 0, 0, 0.0)
    started = time.perf_counter()
    with bottom_only(encoder, first_top), packed_for_a_pass(encoder, precision):
        for batch in loader:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
            with precision.autocast():
                hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            lengths = mask.sum(dim=1).tolist()
            for row, (i, n) in enumerate(zip(batch["index"].tolist(), lengths)):
                rows[i] = hidden[row, :n].to(dtype).cpu()
            stats.real_tokens += int(mask.sum())
            stats.padded_tokens += mask.numel()
            stats.windows += len(ids)
    stats.seconds = time.perf_counter() - started
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return (torch.cat(rows), lengths), stats


class CachedStates(Dataset):
    """Rows ``(index, states (T, H), label)`` of cached token states."""

    def __init__(self, states: torch.Tensor, lengths: torch.Tensor, labels: list, rows: list[int]):
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        self.states, self.offsets, self.labels, self.rows = states, offsets, labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        i = self.rows[k]
        return k, self.states[self.offsets[i] : self.offsets[i + 1]], self.labels[i]

    def lengths(self) -> list[int]:
        return [int(self.offsets[i + 1] - self.offsets[i]) for i in self.rows]


def _pad_states(items) -> dict[str, torch.Tensor]:
    longest = max(len(s) for _, s, _ in items)
    hidden = torch.zeros(len(items), longest, items[0][1].shape[1], dtype=torch.float32)  # (B, T, H)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for row, (_, s, _) in enumerate(items):
        hidden[row, : len(s)] = s.float()
        mask[row, : len(s)] = 1
    return {
        "index": torch.tensor([k for k, _, _ in items]),
        "hidden": hidden,
        "attention_mask": mask,
        "labels": label_tensor([label for _, _, label in items]),
    }


def state_loader(
    data: CachedStates, batch_size: int, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """Training: the length-grouped batches the end-to-end path draws (same sampler, same seed);
    evaluation: length-sorted batches, every ``world_size``-th per rank."""
    if train:
        sampler = LengthGroupedBatchSampler(data.lengths(), batch_size, seed, rank, world_size)
        return DataLoader(data, batch_sampler=sampler, collate_fn=_pad_states)
    batches = sorted_batches(data.lengths(), batch_size)[rank::world_size]
    return DataLoader(data, batch_sampler=batches, collate_fn=_pad_states)


@dataclass(frozen=True)
class BottomStates:
    states: torch.Tensor  # (sum of text lengths, H) in the cache dtype
    lengths: torch.Tensor  # (N,) tokens per text
    info: dict  # cache hit/miss, key, layer, bytes, encoding statistics (metrics.json's features)


def bottom_states(
    encoder: nn.Module,
    first_top: int,
    encoder_sha256: str,
    backbone_folder: Path,
    texts: list[str],
    tokenized: TokenizedTexts,
    pad_token_id: int,
    max_length: int,
    precision: Precision,
    device: torch.device,
    training: TrainingConfig,
    cache_dir: Path,
    cache_dtype: str,
    dist: Dist,
) -> BottomStates:
    """The states entering layer ``first_top`` for every text: from the cache, or encoded once (rank 0
    under torchrun; the others then read the cache)."""
    key = feature_key(
        encoder=encoder_sha256,
        tokenizer=tokenizer_sha256(backbone_folder),
        config=config_sha256(backbone_folder),  # weights alike, config not (eps, RoPE): other states
        max_length=max_length,
        precision=precision.name,
        texts=texts_sha256(texts),
        layer=first_top,
        dtype=cache_dtype,
    )
    cache = TokenStateCache(cache_dir / "states", len(texts))
    info: dict = {"key": key, "layer": first_top}

    def compute():
        value, stats = encode_bottom(
            encoder,
            first_top,
            tokenized,
            precision,
            device,
            training.encode_batch_size,
            training.encode_max_tokens,
            pad_token_id,
            DTYPES[cache_dtype],
        )
        info["encoding"] = stats.as_dict()
        log.info(
            "encoded %d texts through the bottom %d layers in %.1f s (%.1f texts/s)",
            stats.texts,
            first_top,
            stats.seconds,
            stats.texts / max(stats.seconds, 1e-9),
        )
        return value, {"layer": first_top, "dtype": cache_dtype, "encoding": stats.as_dict()}

    if dist.is_main:
        (states, lengths), hit = cache.get_or_compute(key, compute)
    dist.barrier()
    if not dist.is_main:
        states, lengths = cache.load(key)
        hit = True
    info["cache"] = "hit" if hit else "miss"
    info["bytes"] = states.numel() * states.element_size()
    log.info(
        "token-state cache: %s, %d tokens x %d in %s = %.1f MB",
        info["cache"],
        len(states),
        states.shape[1],
        cache_dtype,
        info["bytes"] / 1e6,
    )
    return BottomStates(states, lengths, info)
