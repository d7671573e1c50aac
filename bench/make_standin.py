"""Build a full-size random-init stand-in for a backbone from its config.json (no weights needed).

    python bench/make_standin.py <backbones>/mmBERT-base base_models/mmBERT-base-standin \
        --texts <datasets>/lenta_headlines_ru

Same architecture, parameter count, compute and memory as the real model; random weights, and a
BPE tokenizer trained on --texts (the Gemma-2 tokenizer cannot be downloaded here). The folder gets a
NOT_PRETRAINED.txt marker, so runs on it log "NOT pretrained". Use it with:

    python train.py backbone.path=base_models/mmBERT-base-standin
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from finetune_pipeline.backbone.bpe_trainer import train_bpe_tokenizer
from finetune_pipeline.backbone.tiny import NOT_PRETRAINED_MARKER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_dir", type=Path, help="folder with the backbone's config.json")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--texts", type=Path, required=True, help="folder of raw *.json parts to train the tokenizer on"
    )
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    texts = [r["input"] for p in sorted(args.texts.glob("*.json")) for r in json.loads(p.read_text(encoding="utf-8"))]
    config = AutoConfig.from_pretrained(args.config_dir)
    tokenizer = train_bpe_tokenizer(
        texts, min(args.vocab_size, config.vocab_size), model_max_length=config.max_position_embeddings
    )
    torch.manual_seed(args.seed)
    model = AutoModel.from_config(config)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out_dir)
    tokenizer.save_pretrained(args.out_dir)
    (args.out_dir / NOT_PRETRAINED_MARKER).write_text(
        f"Random-init stand-in built from {args.config_dir}/config.json by bench/make_standin.py.\n", encoding="utf-8"
    )
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{args.out_dir}: {n / 1e6:.1f}M parameters, tokenizer {len(tokenizer)} tokens, {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
