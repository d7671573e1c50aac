"""best_model.pt / final_model.pt: lean (head + backbone identity) or full (encoder + head).

A checkpoint is a dict of plain types and tensors, so ``torch.load(path, weights_only=True)``
reads it:

    {"kind": "head_only" | "full" | "lora" | "partial",
     "backbone": {"name": str, "path": str, "sha256": str,    # the freeze proof's encoder hash
                  "config_sha256": str},                      # its config.json's values (activation, eps, RoPE...)
     "classes": {"symbols": [...], "labels": [...], "sha256": str},   # the label set it was trained for
     "tokenizer_sha256": str,                                  # the run's tokenizer/ files
     "precision": str,                                         # what it trained in (fp32 | bf16 | fp16)
     ["lora": {"rank", "alpha", "dropout", "target_modules"}],   # kind lora: model.adapters.LoraSpec
     "head": {"in_dim", "hidden_dim", "classes", "pooling", "dropout",   # model.classifier.HeadConfig
              "chunk_stride", "chunk_pooling"},   # null unless data.long_text=chunk
     "state_dict": {"head.*": ..., ["encoder.*": ...] (full), ["encoder.*lora_*": ...] (lora),
                    [the trained "encoder.*" tensors] (partial: adapter=top_layers)}}

Loading checks each recorded fact against what the checkpoint is used with: the run folder's
``id_to_label.json`` (a checkpoint copied in from another run is refused), its ``tokenizer/``, the
backbone folder's weights and ``config.json``. Checkpoints written before these facts were recorded
are loaded without those checks.

A frozen run writes head-only checkpoints (kilobytes instead of mmBERT-base's 1.2 GB) unless
``training.full_checkpoints=true``; a LoRA run writes the head and the adapters (megabytes); loading
either onto an encoder verifies the encoder's hash. A loaded LoRA classifier has its adapters
merged into the encoder's weights (plain layers again: faster, and what the exports hold).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.errors import PipelineError

KINDS = ("head_only", "full", "lora", "partial")


@dataclass(frozen=True)
class BackboneIdentity:
    name: str
    path: str
    sha256: str  # of the encoder's tensors (the freeze proof's)
    config_sha256: str = ""  # of its config.json's values; "" where not recorded

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "config_sha256": self.config_sha256}


@dataclass(frozen=True)
class CheckpointIdentity:
    """What a checkpoint must be used with: its backbone, label set and tokenizer (and what it trained in)."""

    backbone: BackboneIdentity
    classes: list[dict]  # id_to_label.json's entries in class-id order: {"symbol", "label"}
    tokenizer_sha256: str
    precision: str

    def as_dict(self) -> dict:
        return {
            "backbone": self.backbone.as_dict(),
            "classes": classes_record(self.classes),
            "tokenizer_sha256": self.tokenizer_sha256,
            "precision": self.precision,
        }


def classes_record(classes: list[dict]) -> dict:
    symbols, labels = [c["symbol"] for c in classes], [c["label"] for c in classes]
    digest = hashlib.sha256(json.dumps([symbols, labels], ensure_ascii=False).encode()).hexdigest()
    return {"symbols": symbols, "labels": labels, "sha256": digest}


def tokenizer_sha256(folder: Path) -> str:
    """SHA-256 over the names and bytes of every file of a tokenizer folder."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    identity: CheckpointIdentity,
    head: dict,
    lora: dict | None = None,
    kind: str | None = None,
) -> None:
    """``head``: the head's config as a dict (``model.classifier.HeadConfig``'s fields)."""
    kind = kind or ("lora" if lora else "full" if any(k.startswith("encoder.") for k in state_dict) else "head_only")
    save_torch(
        path,
        {
            "kind": kind,
            **identity.as_dict(),
            "head": head,
            **({"lora": lora} if lora else {}),
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        },
    )


def verify_run_files(ckpt: dict, path: Path, classes: list[dict], tokenizer_folder: Path) -> None:
    """The checkpoint was trained for this run's label set and tokenizer (where it records them)."""
    recorded = ckpt.get("classes")
    if isinstance(recorded, dict) and recorded.get("sha256") != classes_record(classes)["sha256"]:
        theirs = list(zip(recorded.get("symbols") or [], recorded.get("labels") or []))
        ours = [(c["symbol"], c["label"]) for c in classes]
        first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        shown = (
            f"class {first}: {'='.join(theirs[first]) if first < len(theirs) else 'none'} in the checkpoint, "
            f"{'='.join(ours[first]) if first < len(ours) else 'none'} in id_to_label.json"
        )
        raise PipelineError(
            f"{path}: trained for another label set ({len(theirs)} classes; {shown}); it belongs to another run"
        )
    recorded = ckpt.get("tokenizer_sha256")
    if recorded and tokenizer_folder.is_dir() and recorded != tokenizer_sha256(tokenizer_folder):
        raise PipelineError(
            f"{tokenizer_folder}: differs from the tokenizer {path.name} was trained with (its files "
            "were changed or replaced)"
        )


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle or zip errors of a truncated or foreign file
        raise PipelineError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if (
        not isinstance(ckpt, dict)
        or ckpt.get("kind") not in KINDS
        or not isinstance(ckpt.get("state_dict"), dict)
        or not isinstance(ckpt.get("backbone"), dict)
        or "sha256" not in ckpt["backbone"]
    ):
        raise PipelineError(f"{path}: not a finetune-pipeline checkpoint (no kind/state_dict)")
    return ckpt


def verify_backbone(ckpt: dict, path: Path, encoder_sha256: str, encoder_folder: Path) -> None:
    """A head-only checkpoint only makes sense on the encoder it was trained on."""
    expected = ckpt["backbone"]["sha256"]
    if expected != encoder_sha256:
        raise PipelineError(
            f"{path}: trained on a backbone with sha256 {expected}, but {encoder_folder} has sha256 "
            f"{encoder_sha256}; use the backbone it was trained on"
        )
