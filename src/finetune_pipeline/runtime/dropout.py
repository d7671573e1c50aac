"""Dropout masks on the CPU drawn four to a 64-bit random word.

PyTorch's CPU dropout draws one random number per element (``bernoulli_``): in a bf16 training step
of all-MiniLM-L6-v2 (batch 32 x 56 tokens, 2 cores) its 19 dropout calls took 18-19% of the step,
three times attention's score matmuls and softmax together. Here each mask element is a 16-bit
slice of a 64-bit word from the same generator (``random_`` over the whole int64 range), kept when
it is at least the drop threshold: elements independent, each dropped with probability
``round(p * 65536) / 65536`` (p = 0.1 drops 0.100006), the kept ones scaled by the inverse of the
keep probability, as PyTorch does. 1.5-2.8x faster per call (forward and backward), a MiniLM bf16
step 1.07-1.24x, a whole one-epoch run 1.05-1.12x (docs/benchmarks.md, "Dropout masks drawn four
to a random word"). The generator is PyTorch's own, so seeded and resumed runs repeat exactly; the
masks are other than PyTorch's, so a run's numbers differ from one made with PyTorch's dropout.
GPUs, compiled models, in-place dropout and p outside (0, 1) keep PyTorch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn import functional

LEVELS = 1 << 16  # a mask element is a 16-bit slice of a random word
SLICES = 4  # 16-bit slices per 64-bit word

_torch_dropout = functional.dropout


def word_dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with the mask drawn four elements to a random word (CPU)."""
    drop = round(p * LEVELS)
    if not training or inplace or not 0 < drop < LEVELS or x.device.type != "cpu" or not x.is_floating_point():
        return _torch_dropout(x, p, training, inplace)
    n = x.numel()
    words = torch.empty((n + SLICES - 1) // SLICES, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    slices = words.view(torch.int16)[:n].view(x.shape)  # uniform in [-2^15, 2^15)
    keep = slices >= drop - LEVELS // 2
    return x * (keep.to(x.dtype) * (LEVELS / (LEVELS - drop)))


@contextlib.contextmanager
def word_masks() -> Iterator[None]:
    """Inside the block ``torch.nn.functional.dropout`` (which every ``nn.Dropout`` and the
    encoders' attention call) is ``word_dropout``; PyTorch's is back after it, even on an error.
    For a training step's forward pass, on the process's one training thread (a forward recomputed
    during the backward pass, as activation checkpointing does, would need the block as well)."""
    before = functional.dropout
    functional.dropout = word_dropout
    try:
        yield
    finally:
        functional.dropout = before
