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

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
import torch

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.artifacts.freeze_proof import combined_sha256, module_hashes
from finetune_pipeline.backbone.identity import config_sha256
from finetune_pipeline.backbone.load import read_encoder
from finetune_pipeline.config.schema import Pooling
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.adapters import LoraSpec, add_lora, is_adapter, merge_lora
from finetune_pipeline.model.classifier import HeadConfig, TextClassifier

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
        return {"backbone": self.backbone.as_dict(), "classes": classes_record(self.classes),
                "tokenizer_sha256": self.tokenizer_sha256, "precision": self.precision}


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


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], identity: CheckpointIdentity, head: HeadConfig,
                    lora: dict | None = None, kind: str | None = None) -> None:
    kind = kind or ("lora" if lora else "full" if any(k.startswith("encoder.") for k in state_dict) else "head_only")
    save_torch(path, {"kind": kind, **identity.as_dict(), "head": dataclasses.asdict(head),
                      **({"lora": lora} if lora else {}),
                      "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}})


def verify_run_files(ckpt: dict, path: Path, classes: list[dict], tokenizer_folder: Path) -> None:
    """The checkpoint was trained for this run's label set and tokenizer (where it records them)."""
    recorded = ckpt.get("classes")
    if isinstance(recorded, dict) and recorded.get("sha256") != classes_record(classes)["sha256"]:
        theirs = list(zip(recorded.get("symbols") or [], recorded.get("labels") or []))
        ours = [(c["symbol"], c["label"]) for c in classes]
        first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        shown = (f"class {first}: {'='.join(theirs[first]) if first < len(theirs) else 'none'} in the checkpoint, "
                 f"{'='.join(ours[first]) if first < len(ours) else 'none'} in id_to_label.json")
        raise PipelineError(f"{path}: trained for another label set ({len(theirs)} classes; {shown}); it belongs to "
                            "another run")
    recorded = ckpt.get("tokenizer_sha256")
    if recorded and tokenizer_folder.is_dir() and recorded != tokenizer_sha256(tokenizer_folder):
        raise PipelineError(f"{tokenizer_folder}: differs from the tokenizer {path.name} was trained with (its files "
                            "were changed or replaced)")


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle or zip errors of a truncated or foreign file
        raise PipelineError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if (not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS or not isinstance(ckpt.get("state_dict"), dict)
            or not isinstance(ckpt.get("backbone"), dict) or "sha256" not in ckpt["backbone"]):
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


def load_classifier(path: Path, backbone_folder: Path | None = None, classes: list[dict] | None = None,
                    tokenizer_folder: Path | None = None) -> TextClassifier:
    """A ready-to-use classifier (eval mode, CPU) from ``best_model.pt`` or ``final_model.pt``.

    A head-only checkpoint gets its encoder from ``backbone_folder`` (default: the path recorded in
    the checkpoint), and the encoder's SHA-256 must equal the recorded one; a full checkpoint
    carries its own encoder weights. Either way the folder's config.json must be the one trained
    with, and with ``classes`` / ``tokenizer_folder`` (the run's) the checkpoint must have been
    trained for that label set and tokenizer.
    """
    ckpt = load_checkpoint(path)
    if classes is not None:
        verify_run_files(ckpt, path, classes, tokenizer_folder or path.parent / "tokenizer")
    folder = Path(backbone_folder or ckpt["backbone"]["path"])
    if not (folder / "config.json").is_file():
        raise PipelineError(f"{path}: its backbone folder {folder} is missing; pass the folder that holds it")
    recorded = ckpt["backbone"].get("config_sha256")
    if recorded and recorded != config_sha256(folder):
        raise PipelineError(f"{folder / 'config.json'}: differs from the config {path.name} was trained with (an "
                            "activation, norm epsilon, RoPE setting or shape changed); use the backbone it was trained on")
    encoder = read_encoder(folder)
    state = ckpt["state_dict"]
    if ckpt["kind"] in ("head_only", "lora", "partial"):
        verify_backbone(ckpt, path, combined_sha256(module_hashes(encoder)), folder)
    try:
        head = HeadConfig(**{**ckpt["head"], "dropout": 0.0}) if "head" in ckpt else _head_of_older_checkpoint(ckpt)
        if ckpt["kind"] == "lora":
            encoder = add_lora(encoder, LoraSpec.from_dict(ckpt["lora"]))
            _check_adapters(encoder, state, path)
        model = TextClassifier(encoder, head.build(), Pooling(head.pooling), frozen=True, chunking=head.chunking())
        unknown = sorted(set(state) - set(model.state_dict()))
        if unknown:
            raise PipelineError(f"{path}: tensors this classifier does not have ({len(unknown)}, e.g. {unknown[0]})")
        restore_weights(model, state)
        if ckpt["kind"] == "lora":
            merge_lora(model.encoder)
    except (KeyError, ValueError, RuntimeError, AttributeError) as e:  # tensors of other shapes or names
        raise PipelineError(f"{path}: its weights do not fit a classifier over {folder} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return model.eval()


def _check_adapters(encoder: torch.nn.Module, state: dict, path: Path) -> None:
    wanted = {f"encoder.{n}" for n in encoder.state_dict() if is_adapter(n)}
    missing = sorted(wanted - state.keys())
    if missing:
        raise PipelineError(f"{path}: a LoRA checkpoint without its adapter tensors ({len(missing)} missing, e.g. "
                            f"{missing[0]})")


def _head_of_older_checkpoint(ckpt: dict) -> HeadConfig:
    """Checkpoints written before the head's config was stored: its shape from the two Linear layers."""
    hidden_dim, in_dim = ckpt["state_dict"]["head.1.weight"].shape  # Linear(in_dim, hidden_dim)
    return HeadConfig(in_dim, hidden_dim, ckpt["state_dict"]["head.4.weight"].shape[0], ckpt["pooling"])


def restore_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's tensors that the model has; a head-only one leaves the (base) encoder as is."""
    own = model.state_dict()
    missing = [k for k in own if k.startswith("head.") and k not in state]
    if missing:
        raise PipelineError(f"checkpoint lacks head tensors {missing}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
