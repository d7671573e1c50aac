"""The compute ceiling: achieved FLOP/s of the encoding pass and of a full fine-tuning step on the
mmBERT-base stand-in, against a matmul peak measured in the same run, fp32 and bf16; and where a
step's time goes (one profiled step).

    python bench/bench_compute_ceiling.py <backbones>/mmBERT-base [--batch 16] [--tokens 128]

FLOPs as the issue counts them: 2 x non-embedding parameters per token for a forward pass, 6 x for
a training step (forward + backward); attention's T^2 terms and the embedding lookup are left out,
so the fractions are slight underestimates. The bf16 step is also timed with the encoder's plain
(``eager``) attention, which ``training.attention=auto`` picks for short batches, and with that and
the token embedding matrix frozen (``training.freeze_embeddings=true``; the FLOP count is the same,
it leaves out the embedding anyway). Peak: the best of square fp32 / bf16 matmuls (n = 1024,
2048, 4096) in this process, on all cores. The model is the random-init stand-in built from the
config (same shapes and cost as the real model). Results: printed and written to
bench/results/compute_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()


def matmul_peak(dtype: torch.dtype) -> float:
    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)
        reps = max(2, int(2e10 / (2 * n**3)))
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitives, allocator)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_dir", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(args.config_dir))
    embedding = model.get_input_embeddings().weight.numel()
    dense = sum(p.numel() for p in model.parameters()) - embedding
    ids = torch.randint(5, model.config.vocab_size, (args.batch, args.tokens))
    mask = torch.ones_like(ids)
    tokens = ids.numel()
    result: dict = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "backbone": args.config_dir.name,
        "non_embedding_parameters": dense,
        "batch": args.batch,
        "tokens_per_text": args.tokens,
        "precisions": {},
    }
    for name, dtype in DTYPES.items():
        peak = matmul_peak(dtype or torch.float32)
        model.eval()

        def encode(dtype=dtype):
            with torch.inference_mode(), autocast(dtype):
                model(input_ids=ids, attention_mask=mask)

        encode_s = timed(encode, args.repeats)
        model.train()
        encode_flops = 2 * dense * tokens / encode_s
        result["precisions"][name] = {
            "matmul_peak_gflops": peak / 1e9,
            "encode_seconds_per_batch": encode_s,
            "encode_gflops": encode_flops / 1e9,
            "encode_fraction_of_peak": encode_flops / peak,
        }
        # for-loop AdamW, then fused; bf16 also with what training.attention=auto runs on short batches
        # (runtime/attention.py), and that with training.freeze_embeddings=true
        variants = [("step", False, "sdpa", False), ("step_fused_adamw", True, "sdpa", False)]
        if dtype is not None:
            variants.append(("step_fused_adamw_plain_attention", True, "eager", False))
            variants.append(("step_fused_adamw_plain_attention_frozen_embeddings", True, "eager", True))
        for label, fused, kernel, frozen_embeddings in variants:
            model.get_input_embeddings().weight.requires_grad_(not frozen_embeddings)
            trained = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trained, lr=1e-5, fused=fused)

            def step(dtype=dtype, optimizer=optimizer, kernel=kernel):
                model.config._attn_implementation = kernel
                with autocast(dtype):
                    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
                model.config._attn_implementation = "sdpa"
                out.float().pow(2).mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step_s = timed(step, args.repeats)
            step_flops = 6 * dense * tokens / step_s
            result["precisions"][name].update(
                {
                    f"{label}_seconds": step_s,
                    f"{label}_gflops": step_flops / 1e9,
                    f"{label}_fraction_of_peak": step_flops / peak,
                }
            )
            del optimizer
        print(name, json.dumps(result["precisions"][name]), flush=True)
    # where one bf16 training step's time goes (the for-loop AdamW, as before the fused switch)
    model.get_input_embeddings().weight.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step_once():
        with autocast(torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_once()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step_once()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    result["bf16_step_profile"] = [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in top
    ]
    matmul_ops = (
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::matmul",
        "aten::linear",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "mkldnn",
        "aten::mkldnn",
    )
    result["bf16_step_matmul_share"] = (
        sum(e.self_cpu_time_total for e in events if e.key.startswith(matmul_ops)) / total
    )
    for row in result["bf16_step_profile"]:
        print(f"{row['share']:6.1%} {row['self_ms']:9.1f} ms {row['calls']:6d}  {row['op']}")
    print("matmul/attention kernels' share of the step:", f"{result['bf16_step_matmul_share']:.1%}")
    (REPO / "bench" / "results" / "compute_ceiling.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
