"""The tiny backbone: a random-init ModernBERT + a tokenizer trained on the dataset, cached.

Built on first use under ``<backbone.path>/<key>``, the key hashing the tiny shape and the
dataset, so a changed dataset gets a new tokenizer and every run on the same data reuses one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch
from transformers import AutoModel, ModernBertConfig

from finetune_pipeline.artifacts.atomic import atomic_dir
from finetune_pipeline.backbone.bpe_trainer import train_bpe_tokenizer
from finetune_pipeline.config.schema import TinyBackboneConfig
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

NOT_PRETRAINED_MARKER = "NOT_PRETRAINED.txt"  # in a backbone folder: random weights, say so in logs
ROPE_THETA = 160_000.0  # mmBERT uses it for global and local layers alike


def tiny_backbone_folder(cache_root: Path, shape: TinyBackboneConfig, texts: list[str], data_fingerprint: str) -> Path:
    key = hashlib.sha256(json.dumps([dataclasses.asdict(shape), data_fingerprint]).encode()).hexdigest()[:16]
    folder = cache_root / key
    if (folder / "config.json").is_file():
        log.info("tiny backbone: reusing %s", folder)
        return folder
    log.info("tiny backbone: building a random-init ModernBERT and a tokenizer trained on %d texts", len(texts))
    try:
        with atomic_dir(folder) as tmp:
            _build(tmp, shape, texts)
    except (ValueError, RuntimeError, AssertionError) as e:  # shapes the config checks cannot foresee
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"backbone.tiny: cannot build a ModernBERT of this shape ({reason})") from None
    except OSError:
        if not (folder / "config.json").is_file():  # not a concurrent job that finished first
            raise
    return folder


def _build(folder: Path, shape: TinyBackboneConfig, texts: list[str]) -> None:
    tokenizer = train_bpe_tokenizer(texts, shape.vocab_size, shape.max_position_embeddings)
    config = ModernBertConfig(
        vocab_size=max(shape.vocab_size, len(tokenizer)),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        max_position_embeddings=shape.max_position_embeddings,
        local_attention=shape.local_attention,
        global_attn_every_n_layers=3,
        global_rope_theta=ROPE_THETA,
        local_rope_theta=ROPE_THETA,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(shape.seed)
        model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / NOT_PRETRAINED_MARKER).write_text("Random-init weights for tests and smoke runs.\n", encoding="utf-8")
