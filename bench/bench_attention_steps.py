"""Whole-encoder training steps and forward passes with SDPA against plain (``eager``) attention.

    python bench/bench_attention_steps.py minilm --length 128 --batch 32 --precision bf16
    python bench/bench_attention_steps.py mmbert --length 128 --batch 16 --precision bf16  # stand-in

Both kernels run the same weights; a step is forward + backward + fused AdamW on random token ids
(half the rows padded by a tenth); median of 3 (2 for the mmBERT-base stand-in) after a warm-up.
Models: ``../shared/models/all-MiniLM-L6-v2`` and the random-init stand-in built from
``../shared/backbones/mmBERT-base/config.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

SHARED = Path(__file__).resolve().parents[2] / "shared"


def build(which: str, kernel: str):
    if which == "minilm":
        return AutoModel.from_pretrained(SHARED / "models" / "all-MiniLM-L6-v2", attn_implementation=kernel)
    config = AutoConfig.from_pretrained(SHARED / "backbones" / "mmBERT-base")
    return AutoModel.from_config(config, attn_implementation=kernel)


def timings(encoder, ids, mask, bf16: bool, repeats: int) -> dict[str, float]:
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=5e-5, fused=True)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def train_step():
        with autocast():
            states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        states.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward():
        with torch.inference_mode(), autocast():
            encoder(input_ids=ids, attention_mask=mask)

    out = {}
    for name, fn in (("train", train_step), ("forward", forward)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["minilm", "mmbert"])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()
    torch.manual_seed(0)
    encoders = {kernel: build(args.model, kernel) for kernel in ("sdpa", "eager")}
    encoders["eager"].load_state_dict(encoders["sdpa"].state_dict())
    ids = torch.randint(1000, 20000, (args.batch, args.length))
    mask = torch.ones_like(ids)
    mask[: args.batch // 2, args.length - args.length // 10 :] = 0
    repeats = 3 if args.model == "minilm" else 2
    result = {k: timings(e, ids, mask, args.precision == "bf16", repeats) for k, e in encoders.items()}
    for part in ("train", "forward"):
        sdpa, eager = result["sdpa"][part], result["eager"][part]
        print(
            f"{args.model} {args.batch} x {args.length} {args.precision} {part}: SDPA {sdpa * 1e3:.0f} ms, "
            f"plain {eager * 1e3:.0f} ms, SDPA / plain {sdpa / eager:.2f}"
        )


if __name__ == "__main__":
    main()
