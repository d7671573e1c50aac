"""Which device a run uses: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, checked in one place."""

from __future__ import annotations

import torch

from finetune_pipeline.config.checks import check_device_name
from finetune_pipeline.errors import PipelineError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when available; under torchrun (``local_rank``) each process takes its own GPU."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"training.device={name} but CUDA is not available; use training.device=cpu or auto")
    return torch.device(name)
