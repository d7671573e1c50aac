"""torch.compile against eager for a full fine-tuning step of all-MiniLM-L6-v2 (bf16 autocast, mean
pooling + MLP head, fused AdamW, batch 32), compile time included.

    python bench/bench_compile_step.py eager | compile | static | eager-bucketed   # ~20 s to 2 min

``compile``: dynamic shapes over lengths 40-72; ``static``: ``dynamic=False`` with lengths bucketed
to 64 / 96; ``eager-bucketed``: those bucketed lengths without compiling. Prints the total, the
first step, the first ten and the median step after them. Run ``compile`` twice to see a warm
inductor cache (``TORCHINDUCTOR_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModel

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "all-MiniLM-L6-v2"
LENGTHS = [40, 56, 48, 64, 40, 72, 56, 48, 60, 44] * 3
BUCKETED = [64, 64, 96, 64, 96, 64, 64, 96, 64, 64] * 3


class Classifier(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Sequential(torch.nn.Linear(384, 256), torch.nn.GELU(), torch.nn.Linear(256, 4))

    def forward(self, ids, mask):
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * weights).sum(1) / weights.sum(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["eager", "compile", "static", "eager-bucketed"])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Classifier(AutoModel.from_pretrained(MODEL, attn_implementation="sdpa")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    run = {"compile": lambda: torch.compile(model, dynamic=True), "static": lambda: torch.compile(model, dynamic=False)}
    forward = run.get(args.mode, lambda: model)()
    lengths = BUCKETED if args.mode in ("static", "eager-bucketed") else LENGTHS
    started, times = time.perf_counter(), []
    for length in lengths:
        ids = torch.randint(1000, 20000, (32, length))
        mask = torch.ones(32, length, dtype=torch.long)
        mask[:, length - 5 :] = 0
        labels = torch.randint(0, 4, (32,))
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(ids, mask)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    total = time.perf_counter() - started
    print(
        f"{args.mode}: total {total:.1f} s, first step {times[0]:.1f} s, first ten {sum(times[:10]):.1f} s, "
        f"median step after them {statistics.median(times[10:]) * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
