"""One builder per training path (``config.schema.TrainingPath``); each returns one ``BuiltModel``.

- ``cached_features`` (the default): the frozen encoder runs once per text (or not at all on a cache
  hit) and the head trains on pooled features;
- ``frozen_encoder`` / ``full``: the encoder runs on every batch, frozen or fine-tuned with the head;
- ``lora``: peft's LoRA adapters in the frozen encoder train with the head;
- ``top_layers``: the bottom layers' token states are cached once; the top layers + head train on them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase, set_seed

from finetune_pipeline.artifacts.checkpoints import CheckpointIdentity, save_checkpoint
from finetune_pipeline.artifacts.freeze_proof import (
    LoraAdapters,
    TopLayers,
    Trained,
    WholeEncoder,
    combined_sha256,
    module_hashes,
)
from finetune_pipeline.backbone.load import Backbone, load_encoder
from finetune_pipeline.config.schema import Config, TrainingPath, init_seed
from finetune_pipeline.data.batches import TokenizedTexts, eval_loader, feature_loader, train_loader
from finetune_pipeline.data.split import Split
from finetune_pipeline.features.frozen import frozen_features
from finetune_pipeline.features.token_states import CachedStates, bottom_states, state_loader
from finetune_pipeline.model.adapters import adapter_hashes, add_lora, base_hashes, is_adapter, lora_spec
from finetune_pipeline.model.classifier import FeatureClassifier, HeadConfig, TextClassifier
from finetune_pipeline.model.top_layers import check_layers, freeze_all_but_top, top_parameter_prefixes
from finetune_pipeline.paths import resolve_path
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildInputs:
    """What every builder gets: the run's config and path, the data, the backbone, where it runs."""

    cfg: Config
    path: TrainingPath
    backbone: Backbone
    tokenizer: PreTrainedTokenizerBase
    texts: list[str]  # every record's text, in dataset order
    tokenized: TokenizedTexts  # the same texts tokenized once (truncated or chunked), with their class ids
    split: Split
    num_classes: int
    device: torch.device
    precision: Precision
    dist: Dist

    @property
    def multi_label(self) -> bool:
        """The texts carry sets of labels (0/1 rows, ``data.batches.multi_hot``), not class ids."""
        return len(self.tokenized.labels) > 0 and isinstance(self.tokenized.labels[0], np.ndarray)

    def head(self, in_dim: int) -> HeadConfig:
        chunking = self.tokenized.chunking
        return HeadConfig(
            in_dim,
            self.cfg.model.hidden_dim,
            self.num_classes,
            self.cfg.model.pooling.value,
            self.cfg.model.dropout,
            chunking.stride if chunking else None,
            chunking.pooling if chunking else None,
            multi_label=self.multi_label,
        )

    def rows(self) -> tuple[list[int], list[int], list[int]]:
        """The train, val and test rows of the dataset."""
        return tuple([int(i) for i in part] for part in self.split)

    @property
    def shard(self) -> dict[str, int]:
        return {"rank": self.dist.rank, "world_size": self.dist.world_size}


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
    model: nn.Module  # its ``config`` is the head's
    loaders: Loaders
    freeze: FreezeEvidence
    write_checkpoint: Callable[
        [Path, CheckpointIdentity], None
    ]  # best_model.pt / final_model.pt, as this path saves them
    features: dict  # the feature cache's hit/miss, key and encoding statistics (metrics.json)


def build(inputs: BuildInputs) -> BuiltModel:
    """The model, its loaders and its freeze evidence for the run's training path."""
    return BUILDERS[inputs.path](inputs)


def build_head_over_cached_features(inputs: BuildInputs) -> BuiltModel:
    cfg, t, tokenized = inputs.cfg, inputs.cfg.training, inputs.tokenized
    frozen = frozen_features(
        cfg, inputs.backbone, inputs.tokenizer, inputs.texts, tokenized, inputs.device, inputs.precision, inputs.dist
    )
    set_seed(init_seed(cfg))  # the head's initialisation and dropout depend on the seed only
    head = inputs.head(frozen.features.shape[1])
    model = FeatureClassifier(head).to(inputs.device)
    lengths = tokenized.lengths()
    train_rows, val_rows, test_rows = inputs.rows()

    def loader(rows: list[int], train: bool = False) -> DataLoader:
        return feature_loader(
            frozen.features[rows],
            [tokenized.labels[i] for i in rows],
            t.batch_size,
            [lengths[i] for i in rows] if train else None,
            init_seed(cfg),
            **inputs.shard,
        )

    loaders = Loaders(loader(train_rows, train=True), loader(val_rows), loader(test_rows))
    base_encoder = frozen.encoder.state_dict() if frozen.encoder is not None else None  # full_checkpoints only
    del frozen.encoder
    gc.collect()  # the encoder is not needed any more: give its memory back before training
    log.info(
        "model: head on cached %s-pooled features (%d -> %d -> %d), %d train batches per epoch",
        head.pooling,
        head.in_dim,
        head.hidden_dim,
        head.classes,
        len(loaders.train),
    )
    evidence = FreezeEvidence(
        frozen.hashes_before, frozen.hashes_after, frozen.encoder_parameters, frozen.how, WholeEncoder(frozen=True)
    )
    return BuiltModel(
        model,
        loaders,
        evidence,
        _saver(model, lambda: checkpoint_weights(model, head_only=not t.full_checkpoints, base_encoder=base_encoder)),
        frozen.info,
    )


def build_encoder_with_head(inputs: BuildInputs) -> BuiltModel:
    """``frozen_encoder`` (the encoder runs on every batch, unchanged) or ``full`` (it trains too)."""
    frozen = inputs.path == TrainingPath.frozen_encoder
    encoder = load_encoder(inputs.backbone, inputs.cfg.backbone)
    if not frozen and inputs.cfg.training.freeze_embeddings:
        embeddings = encoder.get_input_embeddings().weight
        embeddings.requires_grad_(False)  # no gradient, no optimizer state: the matrix stays as loaded
        log.info("training.freeze_embeddings: the %d x %d token embedding matrix stays as loaded", *embeddings.shape)
    before = inputs.dist.broadcast(module_hashes(encoder) if inputs.dist.is_main else None)
    set_seed(init_seed(inputs.cfg))
    model = TextClassifier(encoder, inputs.head(encoder.config.hidden_size), frozen=frozen).to(inputs.device)
    loaders = _token_loaders(inputs)
    _log_encoder_model(model, "frozen" if frozen else "trainable", loaders)
    evidence = FreezeEvidence(
        before,
        lambda: module_hashes(model.encoder),
        sum(p.numel() for p in encoder.parameters()),
        "before: right after loading; after: after the last epoch",
        WholeEncoder(frozen=frozen),
    )
    head_only = frozen and not inputs.cfg.training.full_checkpoints
    return BuiltModel(
        model, loaders, evidence, _saver(model, lambda: checkpoint_weights(model, head_only)), {"cache": "off"}
    )


def build_lora(inputs: BuildInputs) -> BuiltModel:
    encoder = load_encoder(inputs.backbone, inputs.cfg.backbone)
    lora = lora_spec(inputs.cfg.adapter.lora, encoder)
    before = inputs.dist.broadcast(module_hashes(encoder) if inputs.dist.is_main else None)  # before any adapter
    set_seed(init_seed(inputs.cfg))
    encoder = add_lora(encoder, lora)  # the adapters' initialisation depends on the seed only
    # frozen=False: the encoder runs in training mode (the adapters' dropout); add_lora left only them trainable
    model = TextClassifier(encoder, inputs.head(encoder.config.hidden_size), frozen=False).to(inputs.device)
    loaders = _token_loaders(inputs)
    _log_encoder_model(
        model, f"frozen, LoRA r={lora.rank} alpha={lora.alpha:g} on {', '.join(lora.target_modules)}", loaders
    )
    evidence = FreezeEvidence(
        before,
        lambda: base_hashes(model.encoder),
        sum(p.numel() for n, p in encoder.named_parameters() if not is_adapter(n)),
        "before: right after loading, before the adapters were added; after: the base tensors after the last epoch",
        LoraAdapters(lambda: adapter_hashes(model.encoder)),
    )
    return BuiltModel(
        model, loaders, evidence, _saver(model, lambda: adapter_weights(model), lora=lora.as_dict()), {"cache": "off"}
    )


def build_top_layers(inputs: BuildInputs) -> BuiltModel:
    """The bottom layers' token states cached once, the top layers + head trained on them."""
    cfg, top, tokenized = inputs.cfg, inputs.cfg.adapter.top_layers, inputs.tokenized
    encoder = load_encoder(inputs.backbone, cfg.backbone).to(inputs.device)
    first_top = check_layers(encoder, top.layers)
    prefixes = tuple(top_parameter_prefixes(encoder, top.layers))
    before = inputs.dist.broadcast(module_hashes(encoder) if inputs.dist.is_main else None)
    cached = bottom_states(
        encoder,
        first_top,
        combined_sha256(before),
        inputs.backbone.folder,
        inputs.texts,
        tokenized,
        inputs.tokenizer.pad_token_id,
        cfg.data.max_length,
        inputs.precision,
        inputs.device,
        cfg.training,
        resolve_path(cfg.data.cache_dir),
        top.cache_dtype,
        inputs.dist,
    )
    set_seed(init_seed(cfg))
    head = inputs.head(encoder.config.hidden_size)
    freeze_all_but_top(encoder, top.layers)  # the proof checks against `prefixes`, found independently
    model = TextClassifier(encoder, head, frozen=False).to(inputs.device)
    model.top_from = first_top
    train_rows, val_rows, test_rows = inputs.rows()
    batch_size = cfg.training.batch_size

    def states(rows: list[int]) -> CachedStates:
        return CachedStates(cached.states, cached.lengths, tokenized.labels, rows)

    # train and validate on the cached states; test the model as it is deployed: the whole encoder on the texts
    loaders = Loaders(
        state_loader(states(train_rows), batch_size, True, init_seed(cfg), **inputs.shard),
        state_loader(states(val_rows), batch_size, False, **inputs.shard),
        eval_loader(
            TokenizedTexts.subset(tokenized, test_rows),
            batch_size,
            cfg.training.num_workers,
            inputs.tokenizer.pad_token_id,
            **inputs.shard,
        ),
    )
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "model: encoder layers %d-%d trained over cached states of layers 0-%d -> %s pooling -> MLP head "
        "%d -> %d -> %d; %.2fM trainable parameters; %d train batches per epoch",
        first_top,
        first_top + top.layers - 1,
        first_top - 1,
        head.pooling,
        head.in_dim,
        head.hidden_dim,
        head.classes,
        n_trainable / 1e6,
        len(loaders.train),
    )
    evidence = FreezeEvidence(
        before,
        lambda: module_hashes(model.encoder),
        sum(p.numel() for p in encoder.parameters()),
        "before: right after loading; after: after the last epoch",
        TopLayers(prefixes),
    )

    def weights() -> dict[str, torch.Tensor]:  # the head and the trained layers; the rest is the base's
        return {
            k: v
            for k, v in model.state_dict().items()
            if k.startswith("head.") or k.removeprefix("encoder.").startswith(prefixes)
        }

    return BuiltModel(model, loaders, evidence, _saver(model, weights, kind="partial"), cached.info)


BUILDERS: dict[TrainingPath, Callable[[BuildInputs], BuiltModel]] = {
    TrainingPath.cached_features: build_head_over_cached_features,
    TrainingPath.frozen_encoder: build_encoder_with_head,
    TrainingPath.full: build_encoder_with_head,
    TrainingPath.lora: build_lora,
    TrainingPath.top_layers: build_top_layers,
}


def _token_loaders(inputs: BuildInputs) -> Loaders:
    """Length-grouped training batches and sorted evaluation batches of token ids, dynamically padded."""
    t, pad = inputs.cfg.training, inputs.tokenizer.pad_token_id
    train_part, val_part, test_part = (TokenizedTexts.subset(inputs.tokenized, rows) for rows in inputs.rows())
    return Loaders(
        train_loader(train_part, t.batch_size, init_seed(inputs.cfg), t.num_workers, pad, **inputs.shard),
        eval_loader(val_part, t.batch_size, t.num_workers, pad, **inputs.shard),
        eval_loader(test_part, t.batch_size, t.num_workers, pad, **inputs.shard),
    )


def _log_encoder_model(model: TextClassifier, kind: str, loaders: Loaders) -> None:
    head = model.config
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "model: encoder (%s) -> %s pooling -> MLP head %d -> %d -> %d; %.2fM trainable parameters; "
        "%d train batches per epoch, length-grouped, dynamic padding",
        kind,
        head.pooling,
        head.in_dim,
        head.hidden_dim,
        head.classes,
        n_trainable / 1e6,
        len(loaders.train),
    )


def _saver(
    model: nn.Module, weights: Callable[[], dict[str, torch.Tensor]], lora: dict | None = None, kind: str | None = None
) -> Callable[[Path, CheckpointIdentity], None]:
    """How this path writes best_model.pt / final_model.pt: its tensors, the head's config, its identity."""

    def write(path: Path, identity: CheckpointIdentity) -> None:
        save_checkpoint(path, weights(), identity, dataclasses.asdict(model.config), lora=lora, kind=kind)

    return write


def adapter_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A LoRA checkpoint's tensors: the head and the adapters (the base encoder is known by its SHA-256)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("head.") or is_adapter(k)}


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
