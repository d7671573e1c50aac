"""A classifier from ``best_model.pt`` / ``final_model.pt`` (the format: ``artifacts/checkpoints``).

Each recorded fact is checked against what the checkpoint is used with: the run's label set and
tokenizer, the backbone folder's weights (SHA-256) and config.json.
"""

from __future__ import annotations

from pathlib import Path

import torch

from finetune_pipeline.artifacts.checkpoints import load_checkpoint, verify_backbone, verify_run_files
from finetune_pipeline.artifacts.freeze_proof import combined_sha256, module_hashes
from finetune_pipeline.artifacts.names import TOKENIZER_DIR
from finetune_pipeline.backbone.identity import config_sha256
from finetune_pipeline.backbone.load import read_encoder
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.adapters import LoraSpec, add_lora, is_adapter, merge_lora
from finetune_pipeline.model.classifier import HeadConfig, TextClassifier


def load_classifier(
    path: Path,
    backbone_folder: Path | None = None,
    classes: list[dict] | None = None,
    tokenizer_folder: Path | None = None,
) -> TextClassifier:
    """A ready-to-use classifier (eval mode, CPU) from ``best_model.pt`` or ``final_model.pt``.

    A head-only checkpoint gets its encoder from ``backbone_folder`` (default: the path recorded in
    the checkpoint), and the encoder's SHA-256 must equal the recorded one; a full checkpoint
    carries its own encoder weights. Either way the folder's config.json must be the one trained
    with, and with ``classes`` / ``tokenizer_folder`` (the run's) the checkpoint must have been
    trained for that label set and tokenizer.
    """
    ckpt = load_checkpoint(path)
    if classes is not None:
        verify_run_files(ckpt, path, classes, tokenizer_folder or path.parent / TOKENIZER_DIR)
    folder = Path(backbone_folder or ckpt["backbone"]["path"])
    if not (folder / "config.json").is_file():
        raise PipelineError(f"{path}: its backbone folder {folder} is missing; pass the folder that holds it")
    recorded = ckpt["backbone"].get("config_sha256")
    if recorded and recorded != config_sha256(folder):
        raise PipelineError(
            f"{folder / 'config.json'}: differs from the config {path.name} was trained with (an "
            "activation, norm epsilon, RoPE setting or shape changed); use the backbone it was trained on"
        )
    encoder = read_encoder(folder)
    state = ckpt["state_dict"]
    if ckpt["kind"] in ("head_only", "lora", "partial"):
        verify_backbone(ckpt, path, combined_sha256(module_hashes(encoder)), folder)
    try:
        head = HeadConfig(**{**ckpt["head"], "dropout": 0.0}) if "head" in ckpt else _head_of_older_checkpoint(ckpt)
        if ckpt["kind"] == "lora":
            encoder = add_lora(encoder, LoraSpec.from_dict(ckpt["lora"]))
            _check_adapters(encoder, state, path)
        model = TextClassifier(encoder, head, frozen=True)
        unknown = sorted(set(state) - set(model.state_dict()))
        if unknown:
            raise PipelineError(f"{path}: tensors this classifier does not have ({len(unknown)}, e.g. {unknown[0]})")
        restore_weights(model, state)
        if ckpt["kind"] == "lora":
            merge_lora(model.encoder)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:  # tensors of other shapes or names
        raise PipelineError(
            f"{path}: its weights do not fit a classifier over {folder} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    return model.eval()


def _check_adapters(encoder: torch.nn.Module, state: dict, path: Path) -> None:
    wanted = {f"encoder.{n}" for n in encoder.state_dict() if is_adapter(n)}
    missing = sorted(wanted - state.keys())
    if missing:
        raise PipelineError(
            f"{path}: a LoRA checkpoint without its adapter tensors ({len(missing)} missing, e.g. {missing[0]})"
        )


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
