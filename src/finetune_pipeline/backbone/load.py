"""Find, check and load the encoder and its tokenizer from a local folder.

Order matters: the cheap checks (config.json shape, max_length) run before any weights are read,
and a missing mmBERT is downloaded when online or explained when offline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from finetune_pipeline.backbone.identity import WEIGHT_FILES
from finetune_pipeline.backbone.tiny import NOT_PRETRAINED_MARKER, tiny_backbone_folder
from finetune_pipeline.config.checks import check_max_length
from finetune_pipeline.config.schema import BackboneConfig, BackboneSource
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import resolve_path

log = logging.getLogger(__name__)

HARMLESS_MISSING = ("pooler.",)  # BERT's pooler: the classifier pools token states itself
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spiece.model",
)


@dataclass
class Backbone:
    folder: Path
    config: PretrainedConfig
    pretrained: bool  # False for the tiny random-init encoder


def locate_backbone(cfg: BackboneConfig, max_length: int, texts: list[str], data_fingerprint: str) -> Backbone:
    """The backbone folder with its config read and checked; no weights loaded yet."""
    if cfg.source == BackboneSource.tiny:
        folder = tiny_backbone_folder(resolve_path(cfg.path), cfg.tiny, texts, data_fingerprint)
        return Backbone(folder, read_config(folder, False), pretrained=False)
    folder = resolve_path(cfg.path)
    if not _has_weights(folder):
        _download(cfg, folder)
    hf_config = read_config(folder, cfg.trust_remote_code)
    _check_shape(cfg, hf_config, folder, max_length)
    # stand-ins built by bench/make_standin.py carry this marker: say so instead of "pretrained"
    return Backbone(folder, hf_config, pretrained=not (folder / NOT_PRETRAINED_MARKER).is_file())


def read_config(folder: Path, trust_remote_code: bool) -> PretrainedConfig:
    """``config.json`` read by transformers, or one line naming what is wrong with it."""
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as e:  # broken JSON, unknown model_type, code that may not run
        raise PipelineError(f"{folder}/config.json: not a usable model config ({_first_line(e)})") from None


def load_tokenizer(backbone: Backbone, cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    return check_tokenizer(read_tokenizer(backbone.folder, cfg.trust_remote_code), backbone)


def read_tokenizer(folder: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise PipelineError(
            f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); copy the "
            "tokenizer that belongs to the model into the folder"
        )
    # a folder whose config.json needs model code (our Hugging Face exports): the tokenizer needs none of it,
    # and reading that config without the code only warns about an unknown model type
    config = {"config": PretrainedConfig()} if not trust_remote_code and _needs_model_code(folder) else {}
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **config)
    except Exception as e:  # corrupt tokenizer.json, a missing vocab file it refers to
        raise PipelineError(f"{folder}: cannot load the tokenizer ({_first_line(e)})") from None


def _needs_model_code(folder: Path) -> bool:
    try:
        return "auto_map" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, backbone: Backbone) -> PreTrainedTokenizerBase:
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
    encoder = read_encoder(backbone.folder, cfg.trust_remote_code)
    n_params = sum(p.numel() for p in encoder.parameters())
    log.info(
        "backbone %s: %s, %.1fM parameters, hidden %d, from %s",
        cfg.name,
        "pretrained" if backbone.pretrained else "NOT pretrained (random init)",
        n_params / 1e6,
        backbone.config.hidden_size,
        backbone.folder,
    )
    return encoder


def read_encoder(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """The encoder with every one of its weights read from the folder (fp32 master weights whatever
    the checkpoint's dtype; autocast handles lower precision).

    Weights that do not load into the declared architecture would be left random and the run would
    train a random encoder called pretrained: refused, with the counts. Tolerated: a task head in
    the checkpoint the encoder does not have (``head.*``, ``cls.*``: unexpected), and the unused
    pooler or position-id buffers (missing).
    """
    try:
        encoder, info = AutoModel.from_pretrained(folder, trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as e:  # shape mismatches, truncated safetensors, unknown architectures
        raise PipelineError(f"{folder}: cannot load the encoder's weights ({_first_line(e)})") from None
    own_modules = {k.split(".", 1)[0] for k in encoder.state_dict()}
    missing = [k for k in info["missing_keys"] if not k.startswith(HARMLESS_MISSING) and not k.endswith("position_ids")]
    unexpected = [k for k in info["unexpected_keys"] if k.split(".", 1)[0] in own_modules]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        shown = (missing + unexpected + [str(m[0]) if isinstance(m, tuple) else str(m) for m in mismatched])[:3]
        raise PipelineError(
            f"{folder}: its weights do not fit the architecture in config.json ({type(encoder).__name__}): "
            f"{len(missing)} of {len(encoder.state_dict())} tensors missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} of another shape (e.g. {', '.join(shown)}); the config and the weights must "
            "come from the same model"
        )
    return encoder.float()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _download(cfg: BackboneConfig, folder: Path) -> None:
    offline = (
        "offline now: `python train.py backbone=tiny` (a smoke run on a tiny random model) or "
        "`python train.py backbone=local backbone.path=DIR` (any encoder folder you have)"
    )
    how = (
        f"on a machine with internet run `hf download {cfg.hub_id} --local-dir {folder}` and copy the folder here, "
        f"or point backbone.path at a folder that has it (see base_models/README.md); {offline}"
        if cfg.hub_id
        else "point backbone.path at a folder holding the encoder's config.json and weights (backbone.hub_id is not "
        f"set, so there is nothing to download); {offline}"
    )
    if not cfg.hub_id or not cfg.download:
        raise PipelineError(f"{folder}: no model weights (config.json + model.safetensors or pytorch_model.bin); {how}")
    from huggingface_hub import snapshot_download

    log.info("%s has no weights: downloading %s into it", folder, cfg.hub_id)
    try:
        snapshot_download(cfg.hub_id, local_dir=folder)
    except Exception as e:  # offline, DNS, HTTP errors: all mean "could not download"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PipelineError(
            f"{folder}: no model weights and downloading {cfg.hub_id} failed ({reason}); {how}"
        ) from None


def _check_shape(cfg: BackboneConfig, hf_config: PretrainedConfig, folder: Path, max_length: int) -> None:
    for key in ("hidden_size", "max_position_embeddings"):
        expected, actual = getattr(cfg, key), getattr(hf_config, key, None)
        if expected is not None and actual != expected:
            raise PipelineError(f"{folder}/config.json: {key}={actual}, but backbone.{key}={expected} for {cfg.name}")
    check_max_length(max_length, getattr(hf_config, "max_position_embeddings", None), cfg.name)
