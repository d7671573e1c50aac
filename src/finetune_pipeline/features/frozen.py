"""Features of a frozen encoder: computed once per text, cached, reused by every later epoch and run.

When the cache already holds the features and the encoder's hash is remembered for its unchanged
weight files, the encoder is not even loaded: the head trains in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.artifacts.freeze_proof import combined_sha256, module_hashes
from finetune_pipeline.backbone.identity import config_sha256, files_sha256, remember_hashes, remembered_hashes
from finetune_pipeline.backbone.load import Backbone, load_encoder
from finetune_pipeline.config.schema import Config
from finetune_pipeline.data.batches import TokenizedTexts
from finetune_pipeline.features.cache import FeatureCache, feature_key, texts_sha256, tokenizer_sha256
from finetune_pipeline.features.encode import EncodeStats, encode
from finetune_pipeline.paths import resolve_path
from finetune_pipeline.runtime.distributed import SINGLE, Dist
from finetune_pipeline.runtime.precision import Precision

log = logging.getLogger(__name__)


@dataclass
class FrozenFeatures:
    features: torch.Tensor  # (N, H) float32, one row per text in dataset order
    hashes_before: dict[str, str]  # encoder tensor -> SHA-256 when loaded (or as remembered)
    hashes_after: Callable[[], dict[str, str]]  # taken when called (the freeze proof is written last)
    encoder_parameters: int
    how: str  # for the freeze proof: when the hashes were taken
    encoder: PreTrainedModel | None = None  # kept only for full checkpoints
    info: dict = field(default_factory=dict)  # cache hit/miss, key, encoding stats


def frozen_features(
    cfg: Config,
    backbone: Backbone,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    tokenized: TokenizedTexts,
    device: torch.device,
    precision: Precision,
    dist: Dist = SINGLE,
) -> FrozenFeatures:
    """``tokenized`` holds ``texts`` already tokenized (the caller needs their lengths anyway).

    Under torchrun rank 0 alone reads and writes the cache and hashes the encoder (once, for the
    freeze proof); on a miss every rank encodes its share of the texts and the shares are gathered.
    """
    cache_dir = resolve_path(cfg.data.cache_dir)
    cache = FeatureCache(cache_dir / "features", len(texts))
    key_parts = {
        "tokenizer": tokenizer_sha256(backbone.folder),
        "config": config_sha256(backbone.folder),
        "max_length": cfg.data.max_length,
        "pooling": cfg.model.pooling.value,
        "precision": precision.name,
        "texts": texts_sha256(texts),
    }
    chunking = tokenized.chunking
    if chunking is not None:  # truncated texts keep the keys they always had
        key_parts["long_text"] = chunking.describe()

    if not cfg.training.full_checkpoints:
        fast = dist.broadcast(_without_encoder(cache, backbone, cache_dir, key_parts) if dist.is_main else None)
        if fast is not None:
            return fast

    encoder = load_encoder(backbone, cfg.backbone).to(device)
    n_params = sum(p.numel() for p in encoder.parameters())
    hashes = dist.broadcast(module_hashes(encoder) if dist.is_main else None)
    if dist.is_main:
        remember_hashes(backbone.folder, cache_dir, hashes, n_params)
    key = feature_key(encoder=combined_sha256(hashes), **key_parts)
    info: dict = {"key": key}

    def compute(data: TokenizedTexts) -> tuple[torch.Tensor, EncodeStats]:
        return encode(
            encoder,
            data,
            cfg.model.pooling,
            precision,
            device,
            cfg.training.encode_batch_size,
            cfg.training.encode_max_tokens,
            tokenizer.pad_token_id,
            chunking,
        )

    def compute_and_describe() -> tuple[torch.Tensor, dict]:
        features, stats = compute(tokenized) if not dist.enabled else _encode_sharded(compute, tokenized, dist)
        info["encoding"] = stats.as_dict()
        log.info(
            "encoded %d texts in %.1f s (%.1f texts/s), padding %.1f%% of %d tokens",
            stats.texts,
            stats.seconds,
            stats.texts / max(stats.seconds, 1e-9),
            100 * stats.padding_share,
            stats.padded_tokens,
        )
        return features, {**key_parts, "encoder": combined_sha256(hashes), "encoding": stats.as_dict()}

    if dist.enabled:  # rank 0 looks the key up; on a miss all ranks encode; rank 0 stores the result
        features = dist.broadcast(cache.load(key) if dist.is_main else None)
        hit = features is not None
        if not hit:
            features, meta = compute_and_describe()
            if dist.is_main:
                save_torch(cache.path(key), {"features": features, "meta": meta})
    else:
        features, hit = cache.get_or_compute(key, compute_and_describe)
    info["cache"] = "hit" if hit else "miss"
    after = module_hashes(encoder) if dist.is_main else hashes
    how = (
        "before: right after loading; after: after the encoding pass (the head trains on the features, never on "
        "the encoder)"
    )
    return FrozenFeatures(
        features,
        hashes,
        Taken(after),
        n_params,
        how,
        encoder=encoder if cfg.training.full_checkpoints else None,
        info=info,
    )


def _without_encoder(cache: FeatureCache, backbone: Backbone, cache_dir, key_parts: dict) -> FrozenFeatures | None:
    """Cached features for an encoder whose hash is remembered for its unchanged weight files, or None."""
    remembered = remembered_hashes(backbone.folder, cache_dir)
    if remembered is None:
        return None
    hashes, n_params, files = remembered
    key = feature_key(encoder=combined_sha256(hashes), **key_parts)
    features = cache.load(key)
    if features is None:
        return None
    log.info(
        "feature cache: hit %s; encoder not loaded (its weight files are byte-identical to those whose "
        "tensor sha256 %s was remembered)",
        cache.path(key),
        combined_sha256(hashes)[:12],
    )

    how = (
        "encoder not loaded in this run (the head trained on cached features): the tensor hashes were "
        "remembered from an earlier run, and the SHA-256 of the weight files' bytes was checked against "
        "that run's at the start (before) and at the end (after) of this one"
    )
    return FrozenFeatures(
        features,
        hashes,
        FilesStillHashed(backbone.folder, files, hashes),
        n_params,
        how,
        info={"cache": "hit", "key": key},
    )


@dataclass(frozen=True)
class Taken:
    """Hashes taken already (after the encoding pass). Picklable: rank 0 broadcasts it under torchrun."""

    hashes: dict[str, str]

    def __call__(self) -> dict[str, str]:
        return self.hashes


@dataclass(frozen=True)
class FilesStillHashed:
    """The freeze proof's "after" on a cache hit: the remembered tensor hashes if the weight files are
    still byte-identical to those they were taken from; else every tensor counts as changed, and the
    proof fails."""

    folder: Path
    files: dict[str, str]  # file name -> SHA-256 of its bytes
    hashes: dict[str, str]  # tensor name -> SHA-256

    def __call__(self) -> dict[str, str]:
        if files_sha256(self.folder) == self.files:
            return self.hashes
        log.warning("%s: the encoder's weight files changed during the run", self.folder)
        return {name: "weight files changed during the run" for name in self.hashes}


def _encode_sharded(compute, tokenized: TokenizedTexts, dist: Dist) -> tuple[torch.Tensor, EncodeStats]:
    """Each rank encodes every ``world_size``-th text; all ranks get all features, in dataset order."""
    shard = list(range(dist.rank, len(tokenized), dist.world_size))
    part, stats = compute(TokenizedTexts.subset(tokenized, shard))
    gathered = dist.all_gather((shard, part, stats))
    features = torch.empty(len(tokenized), part.shape[1])  # (N, H)
    for rows, values, _ in gathered:
        features[rows] = values
    every = [s for _, _, s in gathered]
    total = EncodeStats(
        sum(s.texts for s in every),
        sum(s.real_tokens for s in every),
        sum(s.padded_tokens for s in every),
        max(s.seconds for s in every),
    )
    log.info("encoding sharded over %d ranks: %s texts each", dist.world_size, [s.texts for s in every])
    return features, total
