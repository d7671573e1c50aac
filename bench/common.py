"""Helpers shared by the benchmark scripts: machine description and measured child processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import torch

from finetune_pipeline.runtime.precision import cpu_supports_bf16
from finetune_pipeline.runtime.provenance import cpu_model

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()} cores ({cpu}, bf16 flag {cpu_supports_bf16()}){gpu}, torch {torch.__version__}"


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, output) of a child process run from the project root."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out


# all-MiniLM-L6-v2 on AG News: the two runs the calibration and multi-label benchmarks compare
MINILM_RUNS = {
    "frozen head": [
        "training.freeze_backbone=true",
        "training.epochs=20",
        "training.learning_rate=1e-3",
        "training.batch_size=64",
        "model.hidden_dim=512",
    ],
    "full fine-tuning": [
        "training.freeze_backbone=false",
        "training.epochs=2",
        "training.learning_rate=1e-3",
        "training.encoder_learning_rate=5e-5",
        "training.batch_size=32",
        "model.hidden_dim=512",
    ],
}
RESAMPLES = 2000  # bootstrap resamples of the test texts


def interval(values) -> list[float]:
    """The 95% percentile interval of bootstrap values."""
    import numpy as np

    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
