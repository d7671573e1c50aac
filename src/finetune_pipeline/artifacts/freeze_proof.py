"""Freeze proof: SHA-256 of every encoder tensor before and after training.

The recipe (documented in README_FREEZE_PROOF.md so anyone can recompute it without this code):
a tensor's hash is SHA-256 over ``"<dtype>|<shape>|"`` followed by its raw bytes (C order, on CPU);
the encoder's hash is SHA-256 over the lines ``"<name> <tensor hash>\\n"`` sorted by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def tensor_sha256(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy of a 786 MB embedding
    return h.hexdigest()


def module_hashes(module: nn.Module) -> dict[str, str]:
    """Tensor name -> hash, over the whole state dict (parameters and buffers)."""
    return {name: tensor_sha256(t) for name, t in module.state_dict().items()}


def combined_sha256(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{n} {hashes[n]}\n" for n in sorted(hashes)).encode()).hexdigest()


@dataclass(frozen=True)
class WholeEncoder:
    """No adapter: the encoder is frozen (nothing may change) or fine-tuned (anything may), as
    ``training.freeze_backbone`` says."""


@dataclass(frozen=True)
class TopLayers:
    """adapter=top_layers: only the tensors under these name prefixes may change."""
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class LoraAdapters:
    """adapter=lora: the base tensors (``before``/``after``) must not change; the adapters train."""
    adapter_hashes: Callable[[], dict[str, str]]  # taken when called: after training


Trained = WholeEncoder | TopLayers | LoraAdapters  # what a run was meant to train in the encoder


def build_freeze_proof(
    before: dict[str, str], after: dict[str, str], freeze_backbone: bool, model: nn.Module, backbone_path: str,
    encoder_total: int, how: str, trained: Trained = WholeEncoder(),
) -> dict:
    """``how`` says when the hashes were taken (they differ between the cached and end-to-end paths);
    ``trained``: what was meant to change, which decides the verdict."""
    changed = sorted(n for n in before if before[n] != after.get(n))
    trainable = {  # a head over cached features has no encoder parameters at all
        part: sum(p.numel() for n, p in model.named_parameters() if n.startswith(f"{part}.") and p.requires_grad)
        for part in ("encoder", "head")
    }
    unchanged = not changed and before.keys() == after.keys()
    adapter = trained.adapter_hashes() if isinstance(trained, LoraAdapters) else None
    if isinstance(trained, TopLayers):
        outside = [n for n in changed if not n.startswith(trained.prefixes)]
        layers = sorted({p.rstrip(".") for p in trained.prefixes})
        verdict = (f"PASS: only the top layers trained ({len(changed)} tensors of {', '.join(layers)} changed); "
                   f"the other {len(before) - len(changed)} tensors bit-identical" if not outside and
                   before.keys() == after.keys() else
                   f"FAIL: {len(outside)} tensors outside the trained top layers changed (e.g. {outside[:1]})")
    elif adapter is not None:
        verdict = (f"PASS: base encoder bit-identical, {len(adapter)} LoRA adapter tensors trained" if unchanged
                   else f"FAIL: LoRA was to leave the base encoder unchanged, but {len(changed)} of {len(before)} "
                        "base tensors changed")
    elif freeze_backbone:
        verdict = "PASS: encoder frozen, all tensors bit-identical" if unchanged else "FAIL: encoder was meant to be frozen but changed"
    else:
        verdict = f"NOT FROZEN: encoder fine-tuned, {len(changed)} of {len(before)} tensors changed"
    return {
        "verdict": verdict,
        "freeze_backbone": freeze_backbone,
        "encoder_unchanged": unchanged,
        "how": how,
        "backbone_path": backbone_path,
        "encoder_sha256_before": combined_sha256(before),
        "encoder_sha256_after": combined_sha256(after),
        "tensors_total": len(before),
        "tensors_changed": changed,
        "trainable_parameters": {**trainable, "encoder_total": encoder_total},
        "tensor_sha256_before": before,
        "tensor_sha256_after": after,
        **({"adapter": "lora", "adapter_tensor_sha256": adapter} if adapter is not None else {}),
        **({"adapter": "top_layers", "trained_tensors": list(trained.prefixes)} if isinstance(trained, TopLayers)
           else {}),
    }
