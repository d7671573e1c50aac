"""What the record guarantees cost, side by side in one process.

    python bench/bench_records_overhead.py [--size-mb 1200] [--out bench/results/records_overhead.json]

- freeze proof on a feature-cache hit: SHA-256 of the weight file's bytes (done at the start and the
  end of such a run), for a file the size of mmBERT-base's model.safetensors (1.2 GB);
- durable writes: ``save_torch`` (temporary file, fsync, rename, fsync of the folder) against a
  plain ``torch.save`` of the same tensors;
- the divergence check: a training step of the head with the gradient norm measured every step
  against the same step without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, machine

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.backbone.identity import files_sha256
from finetune_pipeline.training import loop


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "records_overhead.json")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "date": dt.date.today().isoformat()}
    with tempfile.TemporaryDirectory(dir=REPO / "outputs") as tmp:
        folder = Path(tmp)
        weights = torch.randn(args.size_mb * 2**20 // 4)  # fp32
        torch.save({"w": weights}, folder / "model.safetensors")  # any bytes of that size
        (folder / "config.json").write_text("{}")
        results["weight_file_mb"] = (folder / "model.safetensors").stat().st_size / 2**20
        results["file_sha256_seconds"] = seconds(lambda: files_sha256(folder), 3)

        state = {"w": weights}
        results["torch_save_seconds"] = seconds(lambda: torch.save(state, folder / "plain.pt"), 3)
        results["durable_save_torch_seconds"] = seconds(lambda: save_torch(folder / "durable.pt", state), 3)

    head = torch.nn.Sequential(torch.nn.Linear(768, 512), torch.nn.GELU(), torch.nn.Linear(512, 16))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    x, y = torch.randn(16, 768), torch.randint(0, 16, (16,))
    params = list(head.parameters())

    def step(check: bool, max_norm: float) -> None:
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        if check:  # as the loop does now: the norm is read (and clipped when max_norm > 0)
            norm = loop._clip_or_measure(params, max_norm)
            math.isfinite(float(norm)) and math.isfinite(loss.item())
        elif max_norm > 0:  # as the loop did before: clip only
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(50):
        step(True, 1.0)
    for max_norm in (1.0, 0.0):  # the default clips at 1.0; 0 turns clipping off
        for check in (False, True):
            key = f"head_step_ms_max_grad_norm_{max_norm:g}_{'with' if check else 'without'}_check"
            results[key] = (
                1000
                * seconds(lambda check=check, max_norm=max_norm: [step(check, max_norm) for _ in range(200)], 5)
                / 200
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
