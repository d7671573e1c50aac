"""Learning-rate schedule: linear warm-up, then ``training.lr_schedule`` (transformers' schedulers):
linear decay to 0 (the default), cosine decay to 0, or constant. ``lr_multiplier`` is the linear one
written out, for reading and tests."""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from finetune_pipeline.config.schema import LrSchedule


def lr_multiplier(step: int, warmup_steps: int, total_steps: int) -> float:
    """Factor applied to each group's base lr at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def optimizer_steps(batches_per_epoch: int, accumulation: int, epochs: int) -> int:
    """A last partial accumulation window still makes an optimizer step."""
    return math.ceil(batches_per_epoch / accumulation) * epochs


HF_NAMES = {LrSchedule.linear: "linear", LrSchedule.cosine: "cosine", LrSchedule.constant: "constant_with_warmup"}


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, kind: LrSchedule = LrSchedule.linear
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (its state_dict is the step count, so a resumed run continues it exactly)."""
    return get_scheduler(
        HF_NAMES[kind], optimizer, num_warmup_steps=int(total_steps * warmup_ratio), num_training_steps=total_steps
    )


def accumulation_window(step: int, accumulation: int, batches_per_epoch: int) -> int:
    """Micro-batches in the accumulation window of forward pass ``step`` (1-based within the epoch):
    ``accumulation``, or fewer for the epoch's last, partial window, so that every optimizer step
    averages its micro-batch losses with equal weight (a partial window is not down-weighted)."""
    start = (step - 1) // accumulation * accumulation  # forward passes before this window
    return min(accumulation, batches_per_epoch - start)
