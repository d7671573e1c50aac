"""The training loop: AMP, gradient accumulation, clipping, schedule, step log, per-epoch validation.

It reads top to bottom; the maths lives in small helpers (``schedule``, ``precision``,
``evaluate``) that have unit tests of their own.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from finetune_pipeline.config.schema import BestMetric, TrainingConfig
from finetune_pipeline.training.evaluate import predict, scores
from finetune_pipeline.training.precision import Precision

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    best_epoch: int = 0
    best_value: float = float("nan")
    opt_steps: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False


def is_better(value: float, best: float, metric: BestMetric) -> bool:
    if best != best:  # NaN: nothing recorded yet
        return True
    return value < best if metric == BestMetric.loss else value > best


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    device: torch.device,
    cfg: TrainingConfig,
    save_best: Callable[[], None],
) -> FitResult:
    """Train for ``cfg.epochs``; calls ``save_best`` whenever the validation metric improves."""
    scaler = precision.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    accumulation = cfg.gradient_accumulation_steps
    result = FitResult()
    show_bar = cfg.progress_bar and sys.stderr.isatty()
    started = time.perf_counter()

    for epoch in range(1, cfg.epochs + 1):
        model.train()  # a frozen encoder stays in eval mode (see TextClassifier.train)
        epoch_start, loss_sum, n_texts = time.perf_counter(), 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        n_batches = len(train_loader)
        with logging_redirect_tqdm():
            bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=not show_bar, leave=False)
            for step, batch in enumerate(bar, start=1):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with precision.autocast():
                    logits = model(batch)  # (B, C)
                loss = nn.functional.cross_entropy(logits.float(), batch["labels"])
                scaler.scale(loss / accumulation).backward()

                if step % accumulation == 0 or step == n_batches:
                    scaler.unscale_(optimizer)
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    result.opt_steps += 1

                batch_size = batch["labels"].shape[0]
                loss_sum += loss.item() * batch_size
                n_texts += batch_size
                if step % cfg.log_every_steps == 0 or step == n_batches:
                    log.info(_step_line(epoch, step, n_batches, loss.item(), optimizer, result.opt_steps, device))
                    bar.set_postfix(loss=f"{loss.item():.4f}")

        val = scores(predict(model, val_loader, precision, device), "val")
        epoch_seconds = time.perf_counter() - epoch_start
        entry = {"epoch": epoch, "train/loss": loss_sum / max(1, n_texts), **val,
                 "opt_steps": result.opt_steps, "epoch_seconds": epoch_seconds,
                 "train/texts_per_second": n_texts / epoch_seconds}
        result.history.append(entry)
        value = val[f"val/{cfg.best_metric.value}"]
        improved = is_better(value, result.best_value, cfg.best_metric)
        if improved:
            result.best_epoch, result.best_value = epoch, value
            save_best()
        log.info(
            "epoch %d/%d: train/loss=%.4f val/loss=%.4f val/accuracy=%.4f val/macro_f1=%.4f (%.1f s)%s",
            epoch, cfg.epochs, entry["train/loss"], val["val/loss"], val["val/accuracy"], val["val/macro_f1"],
            epoch_seconds, f"  new best val/{cfg.best_metric.value} -> best_model.pt" if improved else "",
        )
        patience = cfg.early_stopping_patience
        if patience and epoch - result.best_epoch >= patience and epoch < cfg.epochs:
            log.info("early stopping: no better val/%s for %d epochs (best %.4f at epoch %d)",
                     cfg.best_metric.value, patience, result.best_value, result.best_epoch)
            result.stopped_early = True
            break

    result.train_seconds = time.perf_counter() - started
    return result


def _step_line(epoch: int, step: int, n_batches: int, loss: float, optimizer: torch.optim.Optimizer,
               opt_steps: int, device: torch.device) -> str:
    lrs = " ".join(f"lr[{g.get('name', i)}]={g['lr']:.3e}" for i, g in enumerate(optimizer.param_groups))
    line = f"epoch={epoch} step={step}/{n_batches} batch_loss={loss:.4f} {lrs} opt_steps={opt_steps}"
    if device.type == "cuda":
        line += f" gpu_mem={torch.cuda.memory_allocated(device) / 2**20:.0f}MiB peak={torch.cuda.max_memory_allocated(device) / 2**20:.0f}MiB"
    return line
