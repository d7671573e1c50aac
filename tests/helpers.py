"""Helpers the tests import (conftest.py holds fixtures only)."""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.artifacts.metrics_record import BestEpoch, RunMetrics


def write_run_metrics(folder: Path, best: float, test_acc: float, seconds: float = 3.5) -> None:
    """A metrics.json as a finished run writes it, with the given headline numbers."""
    RunMetrics(summary={}, history=[], best=BestEpoch("val/macro_f1", best, 2),
               test={"test/loss": 0.5, "test/accuracy": test_acc, "test/macro_f1": test_acc - 0.01},
               data={}, backbone={}, features={}, loss={}, device="cpu", processes=1, precision="fp32",
               timings={"total_seconds": seconds}).write(folder)
