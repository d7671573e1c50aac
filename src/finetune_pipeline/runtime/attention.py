"""Which attention kernel a bf16 training step on a CPU runs, by the batch's padded length.

PyTorch's fused CPU attention (SDPA's flash kernel) is the better choice for long sequences, but
its bf16 backward pass carries a large fixed cost: on this project's 2-core machines, attention
forward + backward over 4,096 tokens took 2.7-5x longer through SDPA than through plain matmuls and
softmax at 32-64 tokens, 1.4-1.8x at 128, and 0.4-0.9x (SDPA faster) from 256 on; a whole
MiniLM / mmBERT-base training step at 128 tokens was 1.36x / 1.18x faster with the plain kernel
(docs/benchmarks.md, "... the attention kernel (issue 30)"). In fp32 SDPA won at every length
measured; GPUs keep SDPA (not measured here).

So a bf16 CPU training step runs the encoder's ``eager`` attention when its batch is no longer
than the longest probed length at which the plain kernel won on this CPU, for this head shape,
and SDPA otherwise. The probe (1-2 s) runs once per CPU model, torch version and head shape,
and is remembered beside the precision decision; forward-only passes (validation, prediction)
keep SDPA, where the two ran alike.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import torch

from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.precision import cpu_model, machine_cache_dir, remembered

log = logging.getLogger(__name__)

PROBE_LENGTHS = (64, 128, 256, 512)
PROBE_TOKENS = 2048  # per probed batch (batch size x length)
MIN_GAIN = 1.1  # the plain kernel must be this much faster to be chosen


def _seconds(fn, q, k, v, mask) -> float:
    for i in range(3):
        if i == 1:
            start = time.perf_counter()
        fn(q, k, v, mask).float().sum().backward()
    return (time.perf_counter() - start) / 2


def _plain(q, k, v, additive):
    weights = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1])) + additive
    return torch.matmul(torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype), v)


def _fused(q, k, v, keep):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def probe_plain_up_to(heads: int, head_dim: int) -> tuple[int, dict[int, float]]:
    """(longest length up to which plain attention beat SDPA by ``MIN_GAIN`` at every probed length;
    0 if not at the shortest), and SDPA / plain time at each probed length. bf16, forward + backward."""
    generator = torch.Generator().manual_seed(0)
    ratios, up_to = {}, 0  # probing stops at the first length where the plain kernel does not win
    for length in PROBE_LENGTHS:
        batch = max(1, PROBE_TOKENS // length)
        q, k, v = (
            torch.randn(batch, heads, length, head_dim, generator=generator, dtype=torch.bfloat16).requires_grad_()
            for _ in range(3)
        )
        keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        keep[: batch // 2, ..., length - length // 10 :] = False  # half the rows padded, as in a real batch
        additive = torch.zeros(keep.shape, dtype=torch.bfloat16).masked_fill(~keep, torch.finfo(torch.bfloat16).min)
        ratios[length] = _seconds(_fused, q, k, v, keep) / _seconds(_plain, q, k, v, additive)
        if ratios[length] < MIN_GAIN:
            break
        up_to = length
    return up_to, ratios


def plain_attention_up_to(heads: int, head_dim: int) -> tuple[int, str]:
    """(length limit, why): measured once per CPU model, core count, torch version and head shape,
    remembered in the machine cache. Where nothing can be remembered: 0 (SDPA always)."""
    key = f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {heads}x{head_dim} bf16"
    memo = machine_cache_dir() / "cpu_attention.json"

    def measure() -> dict:
        up_to, ratios = probe_plain_up_to(heads, head_dim)
        return {"plain_up_to": up_to, "sdpa_over_plain": {str(n): round(r, 2) for n, r in ratios.items()}}

    try:
        entry, how = remembered(memo.name, key, measure)
        return int(entry["plain_up_to"]), f"{how} {entry['measured']}, remembered in {memo}"
    except (OSError, PipelineError, KeyError, TypeError, ValueError) as e:
        return 0, f"the per-machine probe cannot be stored in {memo} ({e}); SDPA throughout"


class AttentionByLength:
    """Switches a Hugging Face encoder between its ``eager`` and ``sdpa`` attention around a training
    step, by the step's padded length; both read ``config._attn_implementation`` at every forward."""

    def __init__(self, config, plain_up_to: int):
        self.config, self.plain_up_to = config, plain_up_to

    @classmethod
    def for_training(cls, encoder: torch.nn.Module, precision_name: str, device: torch.device):
        """The switch for a bf16 CPU training step of an SDPA encoder; None where SDPA stays."""
        config = getattr(encoder, "config", None)
        if device.type != "cpu" or precision_name != "bf16" or getattr(config, "_attn_implementation", None) != "sdpa":
            return None
        heads = getattr(config, "num_attention_heads", None)
        if not heads or not getattr(config, "hidden_size", None):
            return None
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        up_to, why = plain_attention_up_to(heads, head_dim)
        log.info(
            "attention in training steps: %s (bf16 on this CPU, %s)",
            f"plain matmuls up to {up_to} tokens, SDPA above" if up_to else "SDPA",
            why,
        )
        return cls(config, up_to) if up_to else None

    @contextlib.contextmanager
    def step(self, length: int):
        if length > self.plain_up_to:
            yield
            return
        self.config._attn_implementation = "eager"
        try:
            yield
        finally:
            self.config._attn_implementation = "sdpa"
