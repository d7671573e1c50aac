"""Checks of single values that need nothing heavy (no torch, no model library), so a bad value
fails at start-up; ``runtime/device``, ``runtime/precision`` and ``backbone/load`` apply the same
checks once the device or the backbone's config.json is known."""

from __future__ import annotations

import re

from finetune_pipeline.errors import PipelineError

COMPILE_SETTINGS = ("auto", "true", "false")  # training.compile (a string: YAML reads true/false as booleans)


def check_device_name(name: str, key: str = "training.device") -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise PipelineError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_precision_for_device(precision: str, device: str) -> None:
    """The one check of a precision against a device (``cpu``, ``cuda``, ``cuda:N``; ``auto`` passes)."""
    if precision == "fp16" and device == "cpu":
        raise PipelineError("precision.mixed_precision=fp16 needs CUDA; on CPU use precision=bf16 or precision=fp32")


def check_max_length(max_length: int, positions: int | None, name: str) -> None:
    """``data.max_length`` against a backbone's positions: from the config at start-up, and from the
    model's config.json once the folder is found."""
    if positions is not None and max_length > positions:
        raise PipelineError(f"data.max_length={max_length} exceeds {name}'s max_position_embeddings={positions}")
