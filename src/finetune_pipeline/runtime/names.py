"""The config-time checks of device and precision names (no torch needed, so a bad value fails
before anything heavy loads; ``device.py`` and ``precision.py`` apply the same checks at run time)."""

from __future__ import annotations

import re

from finetune_pipeline.errors import PipelineError


def check_device_name(name: str, key: str = "training.device") -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise PipelineError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_precision_for_device(precision: str, device: str) -> None:
    """The one check of a precision against a device (``cpu``, ``cuda``, ``cuda:N``; ``auto`` passes)."""
    if precision == "fp16" and device == "cpu":
        raise PipelineError("precision.mixed_precision=fp16 needs CUDA; on CPU use precision=bf16 or precision=fp32")
