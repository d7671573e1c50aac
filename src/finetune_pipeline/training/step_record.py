"""``metrics.jsonl``: one JSON object per logged step and per epoch, so curves need no regex over train.log.

    {"kind": "step", "epoch": 1, "step": 5, "opt_steps": 5, "loss": 1.61, "lr": {"head": 0.001},
     "texts_per_second": 812.4}
    {"kind": "epoch", "epoch": 1, "train/loss": 1.58, "val/loss": 1.55, "val/accuracy": 0.34, ...}

A resumed run appends to the same file; the steps redone after the last saved state then appear
twice, and the later lines are the ones that count.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from finetune_pipeline.artifacts.atomic import to_json
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.tracking.trackers import Trackers


class StepRecord:
    """Appends rows to ``path`` and hands each to the run's trackers (``trackers.log_row``)."""

    def __init__(self, path: Path, trackers: Trackers | None = None):
        self.path, self.trackers = path, trackers
        self._texts, self._since = 0, time.perf_counter()

    def count(self, texts: int) -> None:
        self._texts += texts

    def step(self, epoch: int, step: int, opt_steps: int, loss: float, optimizer: torch.optim.Optimizer) -> None:
        now = time.perf_counter()
        rate = self._texts / max(now - self._since, 1e-9)
        self._texts, self._since = 0, now
        lrs = {str(g.get("name", i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
        self._write(
            {
                "kind": "step",
                "epoch": epoch,
                "step": step,
                "opt_steps": opt_steps,
                "loss": loss,
                "lr": lrs,
                "texts_per_second": rate,
            }
        )

    def epoch(self, entry: dict) -> None:
        self._write({"kind": "epoch", **entry})
        self._texts, self._since = 0, time.perf_counter()  # validation time is no training throughput

    def _write(self, row: dict) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(to_json(row) + "\n")
        except OSError as e:  # a full disk, a folder gone read-only
            raise PipelineError(f"{self.path}: cannot write ({e.strerror or e})") from None
        if self.trackers is not None:
            self.trackers.log_row(row)
