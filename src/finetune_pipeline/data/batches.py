"""Tokenized datasets and batches that waste no compute on padding.

- every batch is padded to its own longest text, never to max_length;
- with ``data.long_text=chunk`` a text longer than max_length is a document of overlapping windows
  (the tokenizer's overflowing tokens, ``chunk_stride`` tokens shared); a batch of documents holds
  all their windows, with ``window_doc`` mapping each window to its document's row;
- evaluation and feature encoding batch texts of similar length (sorted), optionally sized by a
  token budget; callers restore the original order from the batch indices;
- training batches are grouped by length inside random mega-batches, so they stay random.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from transformers import PreTrainedTokenizerBase

from finetune_pipeline.errors import PipelineError

MEGA_BATCH_FACTOR = 50  # training: sort by length within windows of 50 batches (as HF's group_by_length)
# sorted batches: one forward pass costs about as much as this many padded tokens beyond its own
# (all-MiniLM-L6-v2 on this CPU, bf16: 8-10 ms per pass at ~10k tokens/s; docs/benchmarks.md)
FORWARD_OVERHEAD_TOKENS = 128


@dataclass(frozen=True)
class Chunking:
    """``data.long_text=chunk``: windows of max_length tokens sharing ``stride`` tokens, pooled by ``pooling``."""

    stride: int
    pooling: str  # mean | max

    def describe(self) -> str:
        return f"chunk(stride={self.stride}, pooling={self.pooling})"


def chunking_of(data_cfg) -> Chunking | None:
    """The chunking of ``data.long_text=chunk`` (None for ``truncate``)."""
    if getattr(data_cfg.long_text, "value", data_cfg.long_text) != "chunk":
        return None
    return Chunking(data_cfg.chunk_stride, getattr(data_cfg.chunk_pooling, "value", data_cfg.chunk_pooling))


def label_tensor(labels) -> torch.Tensor:
    """(B,) class ids; multi-label rows (``multi_hot``'s 0/1 rows over the labels) as a (B, C) float tensor."""
    if len(labels) and isinstance(labels[0], np.ndarray):
        return torch.from_numpy(np.stack(labels).astype(np.float32))
    return torch.tensor(labels, dtype=torch.long)


def multi_hot(label_sets: list, classes: int) -> np.ndarray:
    """Each record's label ids as a 0/1 row over the ``classes`` labels: an (N, C) uint8 array (1 byte a
    cell: 100,000 texts x 1,000 labels is 100 MB, where Python tuples would take 8 times that)."""
    rows = np.zeros((len(label_sets), classes), dtype=np.uint8)
    for i, ids in enumerate(label_sets):
        rows[i, list(ids)] = 1
    return rows


class TokenizedTexts(Dataset):
    """Texts tokenized once up front (unpadded) with their class ids (multi-label: 0/1 rows, ``multi_hot``):
    truncated to max_length, or,
    with ``chunking``, each text a list of windows of at most max_length tokens (one for a short text)."""

    def __init__(
        self,
        texts: list[str],
        labels: list,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        chunking: Chunking | None = None,
    ):
        self.labels, self.chunking = labels, chunking
        if chunking is None:
            self.input_ids: list = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
            return
        if not getattr(tokenizer, "is_fast", False):
            raise PipelineError(
                f"data.long_text=chunk needs a fast tokenizer (tokenizer.json); {type(tokenizer).__name__} is not one"
            )
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            stride=chunking.stride,
            padding=False,
            return_overflowing_tokens=True,
        )
        self.input_ids = [[] for _ in texts]  # text -> its windows, in order
        for window, text in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"]):
            self.input_ids[text].append(window)

    @classmethod
    def subset(cls, data: TokenizedTexts, indices: list[int]) -> TokenizedTexts:
        part = cls.__new__(cls)
        part.input_ids = [data.input_ids[i] for i in indices]
        part.labels = [data.labels[i] for i in indices]
        part.chunking = data.chunking
        return part

    @property
    def chunked(self) -> bool:
        return self.chunking is not None

    def windows(self) -> int:
        return sum(len(ids) for ids in self.input_ids) if self.chunked else len(self.input_ids)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, list[int], int]:
        return i, self.input_ids[i], self.labels[i]

    def lengths(self) -> list[int]:
        """Tokens per text (all its windows' tokens when chunked): what batching sorts and budgets by."""
        if self.chunked:
            return [sum(len(w) for w in windows) for windows in self.input_ids]
        return [len(ids) for ids in self.input_ids]


class PadCollator:
    """Pads a batch to its longest text (or window). ``index`` holds each row's position in the dataset;
    a batch of chunked documents has one row per window and ``window_doc`` (W,): each window's document."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[int, list, int]]) -> dict[str, torch.Tensor]:
        chunked = bool(items) and bool(items[0][1]) and isinstance(items[0][1][0], list)
        rows = [w for _, windows, _ in items for w in windows] if chunked else [ids for _, ids, _ in items]
        longest = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)  # (B, T) or (W, T)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        batch = {
            "index": torch.tensor([i for i, _, _ in items], dtype=torch.long),  # (B,)
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": label_tensor([label for _, _, label in items]),  # (B,), multi-label (B, C)
        }
        if chunked:
            batch["window_doc"] = torch.tensor(
                [d for d, (_, windows, _) in enumerate(items) for _ in windows], dtype=torch.long
            )  # (W,)
        return batch


def sorted_batches(lengths: list[int], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices sorted by length, longest first, cut into the batches that cost the least compute.

    A batch of ``rows`` texts whose longest has ``L`` tokens costs ``rows x L`` padded tokens plus
    ``FORWARD_OVERHEAD_TOKENS`` for the forward pass itself; the cut minimises the total over all
    batches (exactly, by dynamic programming over the sorted order), with at most ``batch_size``
    rows and, with ``max_tokens > 0``, at most that many padded tokens per batch (a single text is
    always allowed). Many texts of similar length give full batches with little padding; a dozen
    texts of mixed lengths (a server's batch) give one or two batches, not one per length.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    longest = np.array([lengths[i] for i in order], dtype=np.float64)
    best = np.zeros(n + 1)  # best[i]: least cost of the sorted texts from i on
    end = np.zeros(n + 1, dtype=np.int64)  # the batch starting at i ends before end[i]
    for i in range(n - 1, -1, -1):
        ends = np.arange(min(n, i + batch_size), i, -1)  # fullest first: ties keep the fuller batch
        padded = (ends - i) * longest[i]  # sorted: text i is the batch's longest
        cost = best[ends] + FORWARD_OVERHEAD_TOKENS + padded
        if max_tokens:
            cost[(padded > max_tokens) & (ends > i + 1)] = np.inf
        k = int(np.argmin(cost))
        best[i], end[i] = cost[k], ends[k]
    batches: list[list[int]] = []
    i = 0
    while i < n:
        batches.append(order[i : end[i]])
        i = int(end[i])
    return batches


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Random batches of similar-length texts, different every epoch, fixed by the seed and epoch.

    Shuffle all indices, cut them into mega-batches of ``MEGA_BATCH_FACTOR`` batches, sort each by
    length and cut it into batches, then shuffle the batch order. ``set_epoch(epoch, skip)`` picks
    the epoch's order and drops its first ``skip`` batches (a resumed run goes on mid-epoch).

    Under torchrun (``world_size`` > 1) the batches are global batches of ``batch_size x world_size``
    texts, the very batches one process would draw with that batch size, and each rank takes every
    ``world_size``-th row of each: gradients averaged by DDP then equal the single-process ones.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.lengths, self.batch_size, self.seed = lengths, batch_size * world_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        return iter(_rank_rows(b, self.rank, self.world_size) for b in self.epoch_batches(self.epoch)[self.skip :])

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rnd = random.Random(self.seed * 100_003 + epoch - 1)
        indices = list(range(len(self.lengths)))
        rnd.shuffle(indices)
        mega = self.batch_size * MEGA_BATCH_FACTOR
        batches = []
        for start in range(0, len(indices), mega):
            window = sorted(indices[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [window[j : j + self.batch_size] for j in range(0, len(window), self.batch_size)]
        rnd.shuffle(batches)
        return batches


def _rank_rows(batch: list[int], rank: int, world_size: int) -> list[int]:
    # a last global batch smaller than the world repeats its first row on the ranks left without one
    # (every rank must run the same number of steps, or DDP's gradient all-reduce would wait forever)
    return batch[rank::world_size] or batch[:1]


def train_loader(
    data: TokenizedTexts,
    batch_size: int,
    seed: int,
    num_workers: int,
    pad_token_id: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    sampler = LengthGroupedBatchSampler(data.lengths(), batch_size, seed, rank, world_size)
    return DataLoader(data, batch_sampler=sampler, num_workers=num_workers, collate_fn=PadCollator(pad_token_id))


def eval_loader(
    data: TokenizedTexts,
    batch_size: int,
    num_workers: int,
    pad_token_id: int,
    max_tokens: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Length-sorted batches; under torchrun each rank takes every ``world_size``-th batch."""
    batches = sorted_batches(data.lengths(), batch_size, max_tokens)[rank::world_size]
    return DataLoader(data, batch_sampler=batches, num_workers=num_workers, collate_fn=PadCollator(pad_token_id))


def _feature_rows(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    index, features, labels = (torch.stack(column) for column in zip(*rows))
    return {"index": index, "features": features, "labels": labels}  # (B,), (B, H), (B,)


def feature_loader(
    features: torch.Tensor,
    labels: list[int],
    batch_size: int,
    train_lengths: list[int] | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Batches of cached (N, H) features, in-process (rows are tensor slices).

    For training, pass the texts' token lengths: the batches are then exactly those the end-to-end
    path draws (same sampler, same seed), so both paths train the head on the same batches.
    """
    data = TensorDataset(torch.arange(len(labels)), features, label_tensor(labels))
    if train_lengths is None:
        chunks = [list(range(i, min(i + batch_size, len(labels)))) for i in range(0, len(labels), batch_size)]
        return DataLoader(data, batch_sampler=chunks[rank::world_size], collate_fn=_feature_rows)
    sampler = LengthGroupedBatchSampler(train_lengths, batch_size, seed, rank, world_size)
    return DataLoader(data, batch_sampler=sampler, collate_fn=_feature_rows)
