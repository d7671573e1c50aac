"""Freeze proof: SHA-256 of every encoder tensor before and after training.

The recipe (documented in README_FREEZE_PROOF.md so anyone can recompute it without this code):
a tensor's hash is SHA-256 over ``"<dtype>|<shape>|"`` followed by its raw bytes (C order, on CPU);
the encoder's hash is SHA-256 over the lines ``"<name> <tensor hash>\\n"`` sorted by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.artifacts.names import FREEZE_PROOF_FILE
from finetune_pipeline.errors import PipelineError


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
    """No adapter: the encoder is frozen (nothing may change) or fine-tuned (anything may)."""

    frozen: bool


@dataclass(frozen=True)
class TopLayers:
    """adapter=top_layers: only the tensors under these name prefixes may change."""

    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class LoraAdapters:
    """adapter=lora: the base tensors (``before``/``after``) must not change; the adapters train."""

    adapter_hashes: Callable[[], dict[str, str]]  # taken when called: after training


Trained = WholeEncoder | TopLayers | LoraAdapters  # what a run was meant to train in the encoder
STATUSES = ("pass", "fail", "not_frozen")


@dataclass(frozen=True)
class FreezeProof:
    """``freeze_proof.json``. ``status``: pass (what was to stay unchanged is bit-identical), fail (it
    changed), not_frozen (the whole encoder was fine-tuned: nothing to prove); ``verdict``: the same
    for a person."""

    status: str
    verdict: str
    freeze_backbone: bool  # the whole encoder was meant to stay frozen (a head-only path)
    encoder_unchanged: bool
    how: str  # when the hashes were taken
    backbone_path: str
    encoder_sha256_before: str
    encoder_sha256_after: str
    tensors_total: int
    tensors_changed: list[str]
    trainable_parameters: dict[str, int]  # encoder, head, encoder_total
    tensor_sha256_before: dict[str, str]
    tensor_sha256_after: dict[str, str]
    adapter: str | None = None  # lora | top_layers
    adapter_tensor_sha256: dict[str, str] | None = None  # lora: the trained adapters
    trained_tensors: list[str] | None = None  # top_layers: the name prefixes that were to train

    def write(self, run_dir: Path) -> None:
        write_json(run_dir / FREEZE_PROOF_FILE, {k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @classmethod
    def read(cls, run_dir: Path) -> FreezeProof:
        """A run's proof; one written before ``status`` existed gets it from its verdict."""
        path = run_dir / FREEZE_PROOF_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            status = raw.get("status") or {"PASS": "pass", "FAIL": "fail"}.get(
                raw["verdict"].split(":")[0], "not_frozen"
            )
            if status not in STATUSES:
                raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
            return cls(**{**{k: v for k, v in raw.items() if k in known}, "status": status})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise PipelineError(f"{path}: not a readable freeze proof ({type(e).__name__}: {e})") from None


def build_freeze_proof(
    before: dict[str, str],
    after: dict[str, str],
    model: nn.Module,
    backbone_path: str,
    encoder_total: int,
    how: str,
    trained: Trained,
) -> FreezeProof:
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
        status = "pass" if not outside and before.keys() == after.keys() else "fail"
        verdict = (
            f"PASS: only the top layers trained ({len(changed)} tensors of {', '.join(layers)} changed); "
            f"the other {len(before) - len(changed)} tensors bit-identical"
            if status == "pass"
            else f"FAIL: {len(outside)} tensors outside the trained top layers changed (e.g. {outside[:1]})"
        )
    elif adapter is not None:
        status = "pass" if unchanged else "fail"
        verdict = (
            f"PASS: base encoder bit-identical, {len(adapter)} LoRA adapter tensors trained"
            if unchanged
            else f"FAIL: LoRA was to leave the base encoder unchanged, but {len(changed)} of {len(before)} "
            "base tensors changed"
        )
    elif trained.frozen:
        status = "pass" if unchanged else "fail"
        verdict = (
            "PASS: encoder frozen, all tensors bit-identical"
            if unchanged
            else "FAIL: encoder was meant to be frozen but changed"
        )
    else:
        status, verdict = (
            "not_frozen",
            f"NOT FROZEN: encoder fine-tuned, {len(changed)} of {len(before)} tensors changed",
        )
    return FreezeProof(
        status=status,
        verdict=verdict,
        freeze_backbone=isinstance(trained, WholeEncoder) and trained.frozen,
        encoder_unchanged=unchanged,
        how=how,
        backbone_path=backbone_path,
        encoder_sha256_before=combined_sha256(before),
        encoder_sha256_after=combined_sha256(after),
        tensors_total=len(before),
        tensors_changed=changed,
        trainable_parameters={**trainable, "encoder_total": encoder_total},
        tensor_sha256_before=before,
        tensor_sha256_after=after,
        adapter="lora" if adapter is not None else "top_layers" if isinstance(trained, TopLayers) else None,
        adapter_tensor_sha256=adapter,
        trained_tensors=list(trained.prefixes) if isinstance(trained, TopLayers) else None,
    )
