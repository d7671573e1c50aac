"""The model and its three loaders, built once for whichever way the encoder is used.

- cached (``freeze_backbone=true``, ``cache_features=true``, the default): the encoder runs once per
  text (or not at all on a cache hit) and the head trains on pooled features;
- end to end (fine-tuning, or a frozen run with ``cache_features=false``): the encoder runs on
  every batch, as in the seed.
"""

from __future__ import annotations

import gc
import logging
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from finetune_pipeline.artifacts.freeze_proof import module_hashes
from finetune_pipeline.backbone.load import Backbone, load_encoder
from finetune_pipeline.config.schema import Config
from finetune_pipeline.data.batches import TokenizedTexts, eval_loader, feature_loader, train_loader
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.features.frozen import frozen_features
from finetune_pipeline.model.classifier import FeatureClassifier, TextClassifier, build_head
from finetune_pipeline.runtime.precision import Precision

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """What the training loop needs, whichever way the encoder is used."""

    model: nn.Module
    train: DataLoader
    val: DataLoader
    test: DataLoader
    hashes_before: dict[str, str]
    encoder_parameters: int
    how: str  # when the freeze proof's hashes are taken
    hashes_after: Callable[[], dict[str, str]] | None = None  # cached path: taken when called
    head_only_checkpoints: bool = False  # frozen runs: the encoder is the base model's, known by its hash
    base_encoder_state: dict | None = None  # cached path with full checkpoints: the encoder's weights
    info: dict = field(default_factory=dict)


def setup_model_and_data(cfg: Config, backbone: Backbone, tokenizer, texts: list[str], labels: list[int], split,
                          num_classes: int, device: torch.device, precision: Precision, dist: Dist) -> Setup:
    t = cfg.training
    tokenized = TokenizedTexts(texts, labels, tokenizer, cfg.data.max_length)
    lengths = tokenized.lengths()
    part = [[int(i) for i in idx] for idx in split]  # train, val, test indices (Split iterates in that order)

    if t.freeze_backbone and t.cache_features:
        frozen = frozen_features(cfg, backbone, tokenizer, texts, tokenized, device, precision, dist)
        seed_everything(cfg.data.seed)  # the head's initialisation and dropout depend on the seed only
        model = FeatureClassifier(build_head(frozen.features.shape[1], cfg.model.hidden_dim, num_classes, cfg.model.dropout))
        feats = [frozen.features[idx] for idx in part]
        labs = [[labels[i] for i in idx] for idx in part]
        shard = {"rank": dist.rank, "world_size": dist.world_size}
        loaders = (feature_loader(feats[0], labs[0], t.batch_size, [lengths[i] for i in part[0]], cfg.data.seed, **shard),
                   feature_loader(feats[1], labs[1], t.batch_size, **shard),
                   feature_loader(feats[2], labs[2], t.batch_size, **shard))
        base_state = frozen.encoder.state_dict() if frozen.encoder is not None else None
        del frozen.encoder
        gc.collect()  # the encoder is not needed any more: give its memory back before training
        log.info("model: head on cached %s-pooled features (%d -> %d -> %d), %d train batches per epoch",
                 cfg.model.pooling.value, feats[0].shape[1], cfg.model.hidden_dim, num_classes, len(loaders[0]))
        return Setup(model.to(device), *loaders, frozen.hashes_before, frozen.encoder_parameters, frozen.how,
                     hashes_after=frozen.hashes_after, head_only_checkpoints=not t.full_checkpoints,
                     base_encoder_state=base_state, info=frozen.info)

    encoder = load_encoder(backbone, cfg.backbone)
    seed_everything(cfg.data.seed)
    head = build_head(encoder.config.hidden_size, cfg.model.hidden_dim, num_classes, cfg.model.dropout)
    model = TextClassifier(encoder, head, cfg.model.pooling, frozen=t.freeze_backbone).to(device)
    subsets = [TokenizedTexts.subset(tokenized, idx) for idx in part]
    pad = tokenizer.pad_token_id
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    loaders = (train_loader(subsets[0], t.batch_size, cfg.data.seed, t.num_workers, pad, **shard),
               eval_loader(subsets[1], t.batch_size, t.num_workers, pad, **shard),
               eval_loader(subsets[2], t.batch_size, t.num_workers, pad, **shard))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: encoder (%s) -> %s pooling -> MLP head %d -> %d -> %d; %.2fM trainable parameters; "
             "%d train batches per epoch, length-grouped, dynamic padding",
             "frozen" if t.freeze_backbone else "trainable", cfg.model.pooling.value, encoder.config.hidden_size,
             cfg.model.hidden_dim, num_classes, n_trainable / 1e6, len(loaders[0]))
    how = "before: right after loading; after: after the last epoch"
    hashes = dist.broadcast(module_hashes(model.encoder) if dist.is_main else None)  # taken once
    return Setup(model, *loaders, hashes, sum(p.numel() for p in encoder.parameters()), how,
                 head_only_checkpoints=t.freeze_backbone and not t.full_checkpoints, info={"cache": "off"})


def checkpoint_state(setup: Setup) -> dict[str, torch.Tensor]:
    """Head-only for frozen runs (unless training.full_checkpoints), encoder + head otherwise."""
    state = setup.model.state_dict()
    if setup.head_only_checkpoints:
        return {k: v for k, v in state.items() if k.startswith("head.")}
    if setup.base_encoder_state is not None:  # cached path: the head never saw the encoder's tensors
        state = {**{f"encoder.{k}": v for k, v in setup.base_encoder_state.items()}, **state}
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
