"""AdamW with named parameter groups: head and encoder learning rates, no decay on biases/norms."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, head_lr: float, encoder_lr: float, weight_decay: float) -> list[dict]:
    """Groups ``head``, ``head_no_decay``, ``encoder``, ``encoder_no_decay`` (empty ones dropped).

    1-D tensors (biases, LayerNorm weights) get no weight decay.
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "head"
        decay = p.ndim >= 2
        key = part if decay else f"{part}_no_decay"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr": encoder_lr if part == "encoder" else head_lr,
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, head_lr: float, encoder_lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW; ``fused``: PyTorch's fused kernel (CPU and CUDA), one pass over each tensor instead of a
    dozen elementwise ops: on the mmBERT-base stand-in's full fine-tuning (bf16, CPU) the optimizer step
    fell from 1.9-4.4 s to 0.17-0.23 s (docs/benchmarks.md)."""
    groups = param_groups(model, head_lr, encoder_lr, weight_decay)
    devices = {p.device.type for g in groups for p in g["params"]}
    if fused and devices <= {"cpu", "cuda"}:
        return torch.optim.AdamW(groups, fused=True)
    return torch.optim.AdamW(groups)
