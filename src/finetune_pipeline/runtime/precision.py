"""Device and precision, decided in one place: a name -> dtype, autocast and GradScaler."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.config.checks import check_precision_for_device
from finetune_pipeline.config.schema import MixedPrecision
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.provenance import cpu_model

log = logging.getLogger(__name__)

CACHE_ENV = "FINETUNE_PIPELINE_CACHE"
BF16_MIN_SPEEDUP = 1.1  # auto takes bf16 on a CPU only when its matmuls are measurably faster


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda
    dtype: torch.dtype  # autocast compute dtype; trained weights stay fp32

    @property
    def uses_grad_scaler(self) -> bool:
        return self.name == "fp16"  # bf16 has fp32's exponent range and needs no loss scaling

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # a disabled scaler passes losses and steps through untouched, so the loop has one code path
        return torch.amp.GradScaler(self.device_type, enabled=self.uses_grad_scaler)


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX); elsewhere bf16 autocast is slower than fp32."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of an encoder-sized matmul on this CPU (about 0.2 s to measure).

    Having the AVX512-BF16 flag is not enough: on some virtual machines oneDNN's bf16 kernels run
    slower than fp32 (measured 0.56-0.66x on this project's 2-core development machine).
    """
    a, b = torch.randn(512, 768), torch.randn(768, 1152)  # (tokens, hidden) x (hidden, mlp)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up: oneDNN builds its kernel on first use
        start = time.perf_counter()
        for _ in range(10):
            x @ y
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.float32] / seconds[torch.bfloat16]


def machine_cache_dir() -> Path:
    """Per-user cache of facts about this machine: $FINETUNE_PIPELINE_CACHE, else
    $XDG_CACHE_HOME/finetune_pipeline, else ~/.cache/finetune_pipeline."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finetune_pipeline"


def remembered(file_name: str, key: str, measure) -> tuple[dict, str]:
    """(entry, "measured now" | "measured"): a fact about this machine measured once under ``key`` by
    ``measure() -> dict`` (dated here) and kept in ``<machine cache>/<file_name>``, under a file lock so
    processes started together measure once. Raises OSError / PipelineError where nothing can be kept."""
    memo = machine_cache_dir() / file_name
    memo.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(memo) + ".lock"):
        entries = read_memo(memo)
        if key in entries:
            return entries[key], "measured"
        entries[key] = {**measure(), "measured": dt.date.today().isoformat()}
        write_json(memo, entries)
        return entries[key], "measured now"


def cpu_auto_precision() -> tuple[str, str]:
    """(fp32 | bf16, why): measured once per machine (CPU model, core count, torch version) and
    remembered, so runs started together or days apart make the same choice -- it changes results
    and feature-cache keys. Where nothing can be remembered, fp32."""
    key = f"{cpu_model()} | {os.cpu_count()} cores | torch {torch.__version__}"
    memo = machine_cache_dir() / "cpu_precision.json"

    def measure() -> dict:
        speedup = cpu_bf16_speedup()
        return {"speedup": round(speedup, 3), "precision": "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"}

    try:
        entry, how = remembered(memo.name, key, measure)
        return entry["precision"], (
            f"bf16 matmuls ran {entry['speedup']:.2f}x fp32 speed on this CPU, "
            f"{how} {entry['measured']}, remembered in {memo}"
        )
    except (OSError, PipelineError, KeyError, TypeError) as e:
        return "fp32", f"the per-machine decision cannot be stored in {memo} ({e}); fp32 keeps runs alike"


def resolve_precision(choice: MixedPrecision, device: torch.device) -> Precision:
    cuda = device.type == "cuda"
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else cpu_supports_bf16()
    name = choice.value
    if name == "auto" and not cuda and bf16_ok:
        name, why = cpu_auto_precision()
        log.info("precision auto: %s (%s)", name, why)
    elif name == "auto":
        name = "bf16" if bf16_ok else ("fp16" if cuda else "fp32")
    check_precision_for_device(name, device.type)
    if name == "bf16" and not bf16_ok:
        raise PipelineError(
            f"precision.mixed_precision=bf16 is not supported on this {device.type}; use precision=fp32 or auto"
        )
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(name, device.type, dtype)
