"""The two ways to build the model and its loaders; each builder returns one ``BuiltModel``.

- ``build_head_over_cached_features`` (``freeze_backbone=true``, ``cache_features=true``, the
  default): the encoder runs once per text (or not at all on a cache hit) and the head trains on
  pooled features;
- ``build_encoder_with_head`` (fine-tuning, or a frozen run with ``cache_features=false``): the
  encoder runs on every batch.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import set_seed

from finetune_pipeline.artifacts.checkpoints import CheckpointIdentity, save_checkpoint
from finetune_pipeline.backbone.identity import config_sha256
from finetune_pipeline.artifacts.freeze_proof import (LoraAdapters, TopLayers, Trained, WholeEncoder, combined_sha256,
                                                     module_hashes)
from finetune_pipeline.backbone.load import Backbone, load_encoder
from finetune_pipeline.config.schema import AdapterMethod, Config, init_seed
from finetune_pipeline.data.batches import TokenizedTexts, chunking_of, eval_loader, feature_loader, train_loader
from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.features.frozen import frozen_features
from finetune_pipeline.model.adapters import adapter_hashes, add_lora, base_hashes, is_adapter, lora_spec
from finetune_pipeline.model.classifier import FeatureClassifier, HeadConfig, TextClassifier
from finetune_pipeline.model.top_layers import check_layers, freeze_all_but_top, top_parameter_prefixes
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


@dataclass(frozen=True)
class FreezeEvidence:
    """What the freeze proof compares: the encoder's tensor hashes before and after training."""

    before: dict[str, str]
    after: Callable[[], dict[str, str]]  # taken when called: the proof is written after training
    encoder_parameters: int
    how: str  # when the hashes were taken
    trained: Trained  # what was meant to change in the encoder (decides the verdict)


@dataclass(frozen=True)
class BuiltModel:
    model: nn.Module
    head: HeadConfig
    loaders: Loaders
    freeze: FreezeEvidence
    write_checkpoint: Callable[[Path, CheckpointIdentity], None]  # best_model.pt / final_model.pt, as this path saves them
    features: dict  # the feature cache's hit/miss, key and encoding statistics (metrics.json)


def build_head_over_cached_features(cfg: Config, backbone: Backbone, tokenizer, tokenized: TokenizedTexts,
                                    texts: list[str], split: Split, num_classes: int, device: torch.device,
                                    precision: Precision, dist: Dist) -> BuiltModel:
    t = cfg.training
    frozen = frozen_features(cfg, backbone, tokenizer, texts, tokenized, device, precision, dist)
    set_seed(init_seed(cfg))  # the head's initialisation and dropout depend on the seed only
    head = HeadConfig(frozen.features.shape[1], cfg.model.hidden_dim, num_classes, cfg.model.pooling.value,
                      cfg.model.dropout, *_chunk_fields(cfg))
    model = FeatureClassifier(head.build()).to(device)
    lengths = tokenized.lengths()
    parts = {name: [int(i) for i in idx] for name, idx in zip(("train", "val", "test"), split)}
    shard = {"rank": dist.rank, "world_size": dist.world_size}

    def loader(name: str, train_lengths: list[int] | None = None) -> DataLoader:
        rows = parts[name]
        return feature_loader(frozen.features[rows], [tokenized.labels[i] for i in rows], t.batch_size, train_lengths,
                              init_seed(cfg), **shard)

    loaders = Loaders(loader("train", [lengths[i] for i in parts["train"]]), loader("val"), loader("test"))
    base_encoder = frozen.encoder.state_dict() if frozen.encoder is not None else None  # full_checkpoints only
    del frozen.encoder
    gc.collect()  # the encoder is not needed any more: give its memory back before training
    log.info("model: head on cached %s-pooled features (%d -> %d -> %d), %d train batches per epoch",
             cfg.model.pooling.value, head.in_dim, head.hidden_dim, num_classes, len(loaders.train))
    return BuiltModel(model, head, loaders,
                      FreezeEvidence(frozen.hashes_before, frozen.hashes_after, frozen.encoder_parameters, frozen.how,
                                     WholeEncoder()),
                      lambda path, identity: save_checkpoint(path, checkpoint_weights(
                          model, head_only=not t.full_checkpoints, base_encoder=base_encoder), identity, head),
                      frozen.info)


def build_encoder_with_head(cfg: Config, backbone: Backbone, tokenizer, tokenized: TokenizedTexts, split: Split,
                            num_classes: int, device: torch.device, dist: Dist) -> BuiltModel:
    t = cfg.training
    encoder = load_encoder(backbone, cfg.backbone)
    lora = lora_spec(cfg.adapter, encoder) if cfg.adapter.method == AdapterMethod.lora else None
    before = dist.broadcast(module_hashes(encoder) if dist.is_main else None)  # taken once, before any adapter
    set_seed(init_seed(cfg))
    if lora is not None:
        encoder = add_lora(encoder, lora)  # the adapters' initialisation depends on the seed only
    head = HeadConfig(encoder.config.hidden_size, cfg.model.hidden_dim, num_classes, cfg.model.pooling.value,
                      cfg.model.dropout, *_chunk_fields(cfg))
    model = TextClassifier(encoder, head.build(), cfg.model.pooling, frozen=t.freeze_backbone,
                           chunking=head.chunking()).to(device)
    train_part, val_part, test_part = (TokenizedTexts.subset(tokenized, [int(i) for i in idx]) for idx in split)
    pad, shard = tokenizer.pad_token_id, {"rank": dist.rank, "world_size": dist.world_size}
    loaders = Loaders(train_loader(train_part, t.batch_size, init_seed(cfg), t.num_workers, pad, **shard),
                      eval_loader(val_part, t.batch_size, t.num_workers, pad, **shard),
                      eval_loader(test_part, t.batch_size, t.num_workers, pad, **shard))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kind = ("frozen" if t.freeze_backbone else "trainable") if lora is None else \
        f"frozen, LoRA r={lora.rank} alpha={lora.alpha:g} on {', '.join(lora.target_modules)}"
    log.info("model: encoder (%s) -> %s pooling -> MLP head %d -> %d -> %d; %.2fM trainable parameters; "
             "%d train batches per epoch, length-grouped, dynamic padding", kind, cfg.model.pooling.value,
             head.in_dim, head.hidden_dim, num_classes, n_trainable / 1e6, len(loaders.train))
    if lora is not None:
        evidence = FreezeEvidence(before, lambda: base_hashes(model.encoder),
                                  sum(p.numel() for n, p in encoder.named_parameters() if not is_adapter(n)),
                                  "before: right after loading, before the adapters were added; after: the base "
                                  "tensors after the last epoch", LoraAdapters(lambda: adapter_hashes(model.encoder)))
        return BuiltModel(model, head, loaders, evidence, lambda path, identity: save_checkpoint(
            path, adapter_weights(model), identity, head, lora=lora.as_dict()), {"cache": "off"})
    evidence = FreezeEvidence(before, lambda: module_hashes(model.encoder),
                              sum(p.numel() for p in encoder.parameters()),
                              "before: right after loading; after: after the last epoch", WholeEncoder())
    head_only = t.freeze_backbone and not t.full_checkpoints
    return BuiltModel(model, head, loaders, evidence, lambda path, identity: save_checkpoint(
        path, checkpoint_weights(model, head_only), identity, head), {"cache": "off"})


def build_top_layers(cfg: Config, backbone: Backbone, tokenizer, tokenized: TokenizedTexts, texts: list[str],
                     split: Split, num_classes: int, device: torch.device, precision: Precision,
                     dist: Dist) -> BuiltModel:
    """adapter=top_layers: the bottom layers' token states cached once, the top layers + head trained on them."""
    from finetune_pipeline.features.cache import TokenStateCache, feature_key, texts_sha256, tokenizer_sha256
    from finetune_pipeline.features.token_states import DTYPES, CachedStates, encode_bottom, state_loader
    from finetune_pipeline.paths import resolve_path

    t, a = cfg.training, cfg.adapter
    if tokenized.chunked:
        raise PipelineError("adapter=top_layers caches one row of token states per text; data.long_text=chunk is "
                            "not supported with it yet (use adapter=lora or training.freeze_backbone=false)")
    encoder = load_encoder(backbone, cfg.backbone).to(device)
    first_top = check_layers(encoder, a.layers)
    prefixes = tuple(top_parameter_prefixes(encoder, a.layers))
    before = dist.broadcast(module_hashes(encoder) if dist.is_main else None)
    key = feature_key(encoder=combined_sha256(before), tokenizer=tokenizer_sha256(backbone.folder),
                      config=config_sha256(backbone.folder),  # weights alike, config not (eps, RoPE): other states
                      max_length=cfg.data.max_length, precision=precision.name, texts=texts_sha256(texts),
                      layer=first_top, dtype=a.cache_dtype)
    cache = TokenStateCache(resolve_path(cfg.data.cache_dir) / "states", len(texts))
    info: dict = {"key": key, "layer": first_top}

    def compute():
        value, stats = encode_bottom(encoder, first_top, tokenized, precision, device, t.encode_batch_size,
                                     t.encode_max_tokens, tokenizer.pad_token_id, DTYPES[a.cache_dtype])
        info["encoding"] = stats.as_dict()
        log.info("encoded %d texts through the bottom %d layers in %.1f s (%.1f texts/s)", stats.texts, first_top,
                 stats.seconds, stats.texts / max(stats.seconds, 1e-9))
        return value, {"layer": first_top, "dtype": a.cache_dtype, "encoding": stats.as_dict()}

    if dist.is_main:
        (states, lengths), hit = cache.get_or_compute(key, compute)
    dist.barrier()
    if not dist.is_main:
        states, lengths = cache.load(key)
        hit = True
    info["cache"] = "hit" if hit else "miss"
    info["bytes"] = states.numel() * states.element_size()
    log.info("token-state cache: %s, %d tokens x %d in %s = %.1f MB", info["cache"], len(states), states.shape[1],
             a.cache_dtype, info["bytes"] / 1e6)
    set_seed(init_seed(cfg))
    head = HeadConfig(encoder.config.hidden_size, cfg.model.hidden_dim, num_classes, cfg.model.pooling.value,
                      cfg.model.dropout)
    freeze_all_but_top(encoder, a.layers)  # the proof checks against `prefixes`, found independently
    model = TextClassifier(encoder, head.build(), cfg.model.pooling, frozen=False).to(device)
    model.top_from = first_top
    train_rows, val_rows, test_rows = ([int(i) for i in idx] for idx in split)
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    # train and validate on the cached states; test the model as it is deployed: the whole encoder on the texts
    loaders = Loaders(
        state_loader(CachedStates(states, lengths, tokenized.labels, train_rows), t.batch_size, True, init_seed(cfg),
                     **shard),
        state_loader(CachedStates(states, lengths, tokenized.labels, val_rows), t.batch_size, False, **shard),
        eval_loader(TokenizedTexts.subset(tokenized, test_rows), t.batch_size, t.num_workers, tokenizer.pad_token_id,
                    **shard))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: encoder layers %d-%d trained over cached states of layers 0-%d -> %s pooling -> MLP head "
             "%d -> %d -> %d; %.2fM trainable parameters; %d train batches per epoch", first_top,
             first_top + a.layers - 1, first_top - 1, cfg.model.pooling.value, head.in_dim, head.hidden_dim,
             num_classes, n_trainable / 1e6, len(loaders.train))
    evidence = FreezeEvidence(before, lambda: module_hashes(model.encoder),
                              sum(p.numel() for p in encoder.parameters()),
                              "before: right after loading; after: after the last epoch", TopLayers(prefixes))

    def weights() -> dict[str, torch.Tensor]:  # the head and the trained layers; the rest is the base's
        return {k: v for k, v in model.state_dict().items()
                if k.startswith("head.") or k.removeprefix("encoder.").startswith(prefixes)}

    return BuiltModel(model, head, loaders, evidence,
                      lambda path, identity: save_checkpoint(path, weights(), identity, head, kind="partial"), info)


def adapter_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A LoRA checkpoint's tensors: the head and the adapters (the base encoder is known by its SHA-256)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("head.") or is_adapter(k)}


def _chunk_fields(cfg: Config) -> tuple[int | None, str | None]:
    """HeadConfig's chunk_stride and chunk_pooling: how a checkpoint's user must cut texts."""
    chunking = chunking_of(cfg.data)
    return (chunking.stride, chunking.pooling) if chunking else (None, None)


def checkpoint_weights(model: nn.Module, head_only: bool, base_encoder: dict | None = None) -> dict[str, torch.Tensor]:
    """The one rule for a checkpoint's tensors: the head alone when the encoder is the base model's
    (frozen runs, known by its SHA-256), else encoder + head (``base_encoder``: the encoder's weights
    when the model is a head over cached features)."""
    state = model.state_dict()
    if head_only:
        return {k: v for k, v in state.items() if k.startswith("head.")}
    if base_encoder is not None:
        state = {**{f"encoder.{k}": v for k, v in base_encoder.items()}, **state}
    return state
