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
