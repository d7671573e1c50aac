"""``train_state.pt``: everything needed to continue a run exactly where it stopped.

Saved atomically (a crash leaves the previous state, never half of one) at the end of every epoch
and every ``training.save_every_steps`` optimizer steps, and when SIGINT/SIGTERM stops a run. It is
always taken on an optimizer-step boundary, so no half-accumulated gradient is ever lost or doubled.

    {"format": 1,
     "progress": {epoch, batches_done, opt_steps, best_epoch, best_value, history, loss_sum,
                  n_texts, epoch_seconds, train_seconds},
     "model": trainable weights (the head, or encoder + head when fine-tuning),
     "optimizer", "scheduler", "scaler": their state_dicts,
     "rng": {"python", "numpy", "torch", "cuda"},
     "data": {"raw_fingerprint", "split_sha256"}}

A finished run deletes it (fine-tuning mmBERT-base: 307M fp32 weights + 2 AdamW moments ≈ 3.7 GB).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.distributed import unwrap

FORMAT = 1


@dataclass
class Progress:
    """Where training stands; ``batches_done`` counts forward passes into ``epoch`` (0: at its start)."""

    epoch: int = 1
    batches_done: int = 0
    opt_steps: int = 0
    best_epoch: int = 0
    best_value: float = float("nan")
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch
    loss_sum: float = 0.0  # this epoch so far
    n_texts: int = 0
    epoch_seconds: float = 0.0  # this epoch so far, before the current process
    train_seconds: float = 0.0  # all epochs, before the current process
    stopped_early: bool = False


@dataclass
class Trainer:
    """The objects whose state a resumed run must get back."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def data_identity(raw_fingerprint: str, split: Split, processes: int = 1) -> dict:
    """What must not change under a resumed run: the data, its split, and the number of processes
    (which sets the global batch)."""
    return {"raw_fingerprint": raw_fingerprint, "split_sha256": split.sha256(), "processes": processes}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's tensors, plus the encoder's when it trains (a frozen encoder is the base model's); with
    adapters (LoRA) only the encoder tensors that train: the base weights are the base model's."""
    model = unwrap(model)
    encoder = [(n, p) for n, p in model.named_parameters() if n.startswith("encoder.")]
    training = {n for n, p in encoder if p.requires_grad}
    if training and len(training) < len(encoder):  # adapters in a frozen encoder
        return {
            k: v.detach().cpu().clone()
            for k, v in model.state_dict().items()
            if not k.startswith("encoder.") or k in training
        }
    return {
        k: v.detach().cpu().clone() for k, v in model.state_dict().items() if training or not k.startswith("encoder.")
    }


def save_state(path: Path, progress: Progress, trainer: Trainer, data: dict[str, str]) -> None:
    python_version, python_state, python_gauss = random.getstate()
    state = {
        "format": FORMAT,
        "progress": asdict(progress),
        "model": trainable_state(trainer.model),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
        "rng": {
            "python": [*list(python_state), python_gauss],
            "python_version": python_version,
            "numpy": _numpy_rng(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "data": data,
    }
    save_torch(path, state)


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise PipelineError(f"{path}: not a readable training state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PipelineError(f"{path}: not a finetune-pipeline training state (format {FORMAT})")
    return state


def restore(state: dict, trainer: Trainer, data: dict[str, str], path: Path) -> Progress:
    """Put model, optimizer, scheduler and scaler back; RNGs are restored separately (``restore_rng``)."""
    if state["data"].get("processes", 1) != data["processes"]:
        raise PipelineError(
            f"{path}: this run was trained by {state['data'].get('processes', 1)} process(es), "
            f"not {data['processes']}; resume it with the same torchrun --nproc_per_node (x nodes)"
        )
    if state["data"] != data:
        raise PipelineError(
            f"{path}: the data changed since this run started (raw fingerprint "
            f"{state['data']['raw_fingerprint'][:12]} -> {data['raw_fingerprint'][:12]}); resuming would train on "
            "other data; restore the raw files or start a new run"
        )
    missing, unexpected = unwrap(trainer.model).load_state_dict(state["model"], strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise PipelineError(
            f"{path}: its weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler.is_enabled() and state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    return Progress(**state["progress"])


def restore_rng(rng: dict) -> None:
    """Put back the RNG states saved in a state's ``"rng"`` entry."""
    random.setstate((rng["python_version"], tuple(rng["python"][:-1]), rng["python"][-1]))
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _numpy_rng() -> list:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
