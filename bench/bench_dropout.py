"""Dropout on the CPU: PyTorch's per-element masks against masks drawn four to a random word.

    python bench/bench_dropout.py --model <models>/all-MiniLM-L6-v2 [--rounds 5]

1. One dropout call, forward + backward (p = 0.1), on the two shapes a MiniLM step drops: hidden
   states (32 x 56 x 384) and attention probabilities (32 x 12 x 56 x 56), fp32 and bf16.
2. A MiniLM training step (bf16 autocast, batch 32 x 56 tokens, eager attention as
   ``training.attention=auto`` runs it here, fused AdamW, gradient clipping): the profiler's shares
   of ``aten::bernoulli_`` and of the matmuls with PyTorch's dropout, then both dropouts timed in alternation, ``--rounds``
   rounds of 10 steps each.

Results: printed and written to bench/results/dropout.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch
from torch.nn import functional
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

from finetune_pipeline.runtime.dropout import word_dropout, word_masks


def per_call_ms(dropout, shape, dtype, reps: int = 50) -> float:
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    dropout(x, 0.1).sum().backward()
    start = time.perf_counter()
    for _ in range(reps):
        dropout(x, 0.1).sum().backward()
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result: dict = {"date": str(date.today()), "machine": machine(), "per_call_ms": {}}
    for shape in ((32, 56, 384), (32, 12, 56, 56)):
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
            ms = {
                "pytorch": per_call_ms(functional.dropout, shape, dtype),
                "word": per_call_ms(word_dropout, shape, dtype),
            }
            result["per_call_ms"][key] = ms
            print(
                f"{key}: PyTorch {ms['pytorch']:.2f} ms, word masks {ms['word']:.2f} ms "
                f"({ms['pytorch'] / ms['word']:.2f}x)",
                flush=True,
            )

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager")
    head = torch.nn.Linear(model.config.hidden_size, 4)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=5e-5, fused=True)
    ids = torch.randint(1000, model.config.vocab_size, (32, 56))
    labels = torch.randint(0, 4, (32,))
    model.train()

    def step(words: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16), word_masks() if words else nullcontext():
            logits = head(model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.mean(1))
        functional.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for words in (False, True, False, True):
        step(words)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(False)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    share = ops.get("aten::bernoulli_", 0.0) / sum(ops.values())
    matmuls = sum(ops.get(op, 0.0) for op in ("aten::mm", "aten::addmm", "aten::bmm")) / sum(ops.values())
    result["pytorch_dropout_share_of_step"], result["matmul_share_of_step"] = share, matmuls
    print(
        f"MiniLM bf16 step, PyTorch's dropout: aten::bernoulli_ {share:.1%} of the profiled CPU time, "
        f"matmuls (mm, addmm, bmm) {matmuls:.1%}",
        flush=True,
    )
    seconds: dict[str, list[float]] = {"pytorch": [], "word": []}
    for _ in range(args.rounds):
        for name, words in (("pytorch", False), ("word", True)):
            start = time.perf_counter()
            for _ in range(10):
                step(words)
            seconds[name].append((time.perf_counter() - start) / 10)
    result["step_seconds"] = seconds
    result["step_speedup_per_round"] = [p / w for p, w in zip(seconds["pytorch"], seconds["word"])]
    ratios = result["step_speedup_per_round"]
    print(
        f"step: PyTorch's dropout {statistics.median(seconds['pytorch']):.3f} s, word masks "
        f"{statistics.median(seconds['word']):.3f} s; {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f} by round)"
    )
    out = REPO / "bench" / "results" / "dropout.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
