"""Find, check and load the encoder and its tokenizer from a local folder.

Order matters: the cheap checks (config.json shape, max_length) run before any weights are read,
and a missing mmBERT is downloaded when online or explained when offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from finetune_pipeline.backbone.tiny import NOT_PRETRAINED_MARKER, tiny_backbone_folder
from finetune_pipeline.config.schema import BackboneConfig, BackboneSource
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import resolve_path

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class Backbone:
    folder: Path
    config: PretrainedConfig
    pretrained: bool  # False for the tiny random-init encoder


def locate_backbone(cfg: BackboneConfig, max_length: int, texts: list[str], data_fingerprint: str) -> Backbone:
    """The backbone folder with its config read and checked; no weights loaded yet."""
    if cfg.source == BackboneSource.tiny:
        folder = tiny_backbone_folder(resolve_path(cfg.path), cfg.tiny, texts, data_fingerprint)
        return Backbone(folder, AutoConfig.from_pretrained(folder), pretrained=False)
    folder = resolve_path(cfg.path)
    if not _has_weights(folder):
        _download(cfg, folder)
    hf_config = AutoConfig.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code)
    _check_shape(cfg, hf_config, folder, max_length)
    # stand-ins built by bench/make_standin.py carry this marker: say so instead of "pretrained"
    return Backbone(folder, hf_config, pretrained=not (folder / NOT_PRETRAINED_MARKER).is_file())


def load_tokenizer(backbone: Backbone, cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(backbone.folder, trust_remote_code=cfg.trust_remote_code)
    vocab = backbone.config.vocab_size
    if len(tokenizer) > vocab:
        raise PipelineError(
            f"{backbone.folder}: tokenizer has {len(tokenizer)} tokens but the encoder's embedding has "
            f"vocab_size={vocab}; the tokenizer does not belong to this model"
        )
    if tokenizer.pad_token is None:
        raise PipelineError(f"{backbone.folder}: tokenizer has no pad token; batching needs one")
    return tokenizer


def load_encoder(backbone: Backbone, cfg: BackboneConfig) -> PreTrainedModel:
    # fp32 master weights whatever the checkpoint's dtype; autocast handles lower precision
    encoder = AutoModel.from_pretrained(backbone.folder, trust_remote_code=cfg.trust_remote_code).float()
    n_params = sum(p.numel() for p in encoder.parameters())
    log.info(
        "backbone %s: %s, %.1fM parameters, hidden %d, from %s",
        cfg.name, "pretrained" if backbone.pretrained else "NOT pretrained (random init)",
        n_params / 1e6, backbone.config.hidden_size, backbone.folder,
    )
    return encoder


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _download(cfg: BackboneConfig, folder: Path) -> None:
    how = (
        f"on a machine with internet run `hf download {cfg.hub_id} --local-dir {folder}` and copy the folder here, "
        "or point backbone.path at a folder that has it (see base_models/README.md)"
    )
    if not cfg.hub_id or not cfg.download:
        raise PipelineError(f"{folder}: no model weights (config.json + model.safetensors or pytorch_model.bin); {how}")
    from huggingface_hub import snapshot_download

    log.info("%s has no weights: downloading %s into it", folder, cfg.hub_id)
    try:
        snapshot_download(cfg.hub_id, local_dir=folder)
    except Exception as e:  # offline, DNS, HTTP errors: all mean "could not download"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PipelineError(f"{folder}: no model weights and downloading {cfg.hub_id} failed ({reason}); {how}") from None


def _check_shape(cfg: BackboneConfig, hf_config: PretrainedConfig, folder: Path, max_length: int) -> None:
    for key in ("hidden_size", "max_position_embeddings"):
        expected, actual = getattr(cfg, key), getattr(hf_config, key, None)
        if expected is not None and actual != expected:
            raise PipelineError(f"{folder}/config.json: {key}={actual}, but backbone.{key}={expected} for {cfg.name}")
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise PipelineError(f"data.max_length={max_length} exceeds {cfg.name}'s max_position_embeddings={positions}")
