"""Attention kernels on this CPU: SDPA against plain matmul + softmax, forward + backward, at every
length -- what ``training.attention=auto`` probes (``runtime/attention.py``), in both precisions.

    python bench/bench_attention_kernels.py --heads 12 --head-dim 32 --precision bf16   # ~10 s

4,096 tokens per timed batch (batch size x length), half the rows padded by a tenth; prints the
milliseconds of each kernel (mean of 3 after a warm-up) and SDPA / plain. Whole-encoder figures:
``bench/bench_attention_steps.py``.
"""

from __future__ import annotations

import argparse
import time

import torch

from finetune_pipeline.runtime.attention import _fused, _plain

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def seconds(fn, q, k, v, mask, repeats: int = 3) -> float:
    fn(q, k, v, mask).float().sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(q, k, v, mask).float().sum().backward()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = DTYPES[args.precision]
    for length in (32, 64, 128, 256, 512):
        batch = max(1, 4096 // length)
        q, k, v = (
            torch.randn(batch, args.heads, length, args.head_dim, dtype=dtype).requires_grad_() for _ in range(3)
        )
        keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        keep[: batch // 2, ..., length - length // 10 :] = False
        additive = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
        fused, plain = seconds(_fused, q, k, v, keep), seconds(_plain, q, k, v, additive)
        print(
            f"{length:4d} tokens x {batch:3d}: SDPA {fused * 1e3:7.1f} ms, plain {plain * 1e3:7.1f} ms, {fused / plain:.2f}x"
        )


if __name__ == "__main__":
    main()
