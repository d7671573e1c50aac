"""The training loop: AMP, gradient accumulation, clipping, schedule, step log, per-epoch validation,
early stopping, and a resumable training state (``state.py``) saved on the way.

It reads top to bottom; the maths lives in small helpers (``schedule``, ``precision``,
``evaluate``) that have unit tests of their own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from finetune_pipeline.config.schema import BestMetric, TrainingConfig
from finetune_pipeline.runtime.distributed import SINGLE, Dist, unwrap
from finetune_pipeline.training.divergence import DivergenceCheck
from finetune_pipeline.training.metrics import gather, predict, scores
from finetune_pipeline.runtime.signals import Interrupted, stop_on_signals
from finetune_pipeline.training.loss import Loss, training_loss
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.training.schedule import accumulation_window
from finetune_pipeline.training.step_record import StepRecord
from finetune_pipeline.training.state import Progress, Trainer, restore_rng

log = logging.getLogger(__name__)


def is_better(value: float, best: float, metric: BestMetric) -> bool:
    if best != best:  # NaN: nothing recorded yet
        return True
    return value < best if metric == BestMetric.loss else value > best


def fit(
    trainer: Trainer,
    train_loader: DataLoader,
    val_loader: DataLoader,
    precision: Precision,
    device: torch.device,
    cfg: TrainingConfig,
    save_best: Callable[[], None],
    save_state: Callable[[Progress], str],
    resume: tuple[Progress, dict] | None = None,
    loss_fn: Loss = training_loss(None, 0.0),
    dist: Dist = SINGLE,
    step_record: StepRecord | None = None,
) -> Progress:
    """Train up to ``cfg.epochs``; ``save_best`` runs whenever the validation metric improves.

    ``save_state(progress)`` stores the training state (and returns where, for messages) at every
    epoch end, every ``cfg.save_every_steps`` optimizer steps, and on SIGINT/SIGTERM, after which
    ``Interrupted`` is raised. ``resume``: a saved ``Progress`` and its RNG states, to go on from.
    ``loss_fn``: the training loss (``loss.training_loss``); validation uses plain cross-entropy.
    ``step_record``: where the logged steps and the epochs go as JSON lines (``metrics.jsonl``).
    Under torchrun ``trainer.model`` is DDP-wrapped; every rank validates its share of the batches
    and the predictions are gathered, so all ranks see the same metrics and take the same decisions.
    """
    model, optimizer, scheduler, scaler = trainer.model, trainer.optimizer, trainer.scheduler, trainer.scaler
    trainable = [p for p in model.parameters() if p.requires_grad]
    accumulation = cfg.gradient_accumulation_steps
    progress, saved = resume if resume else (Progress(), None)
    sampler = train_loader.batch_sampler
    n_batches = len(train_loader)
    show_bar = cfg.progress_bar and sys.stderr.isatty()
    divergence = DivergenceCheck(precision.uses_grad_scaler, _lr_hint(cfg))
    process_start, trained_before = time.perf_counter(), progress.train_seconds

    def save(reason: str) -> str:
        now = time.perf_counter()
        progress.train_seconds = trained_before + now - process_start
        progress.epoch_seconds = epoch_before + now - epoch_start
        where = save_state(progress)
        size = os.path.getsize(where) if os.path.isfile(where) else 0
        log.info("training state saved (%s): epoch %d, %d/%d batches, %d optimizer steps -> %s (%.1f MB in %.2f s)",
                 reason, progress.epoch, progress.batches_done, n_batches, progress.opt_steps, where, size / 1e6,
                 time.perf_counter() - now)
        return where

    with stop_on_signals() as stop, logging_redirect_tqdm():
        for epoch in range(progress.epoch, cfg.epochs + 1):
            progress.epoch, skip = epoch, progress.batches_done
            epoch_start, epoch_before = time.perf_counter(), progress.epoch_seconds
            model.train()  # a frozen encoder stays in eval mode (see TextClassifier.train)
            optimizer.zero_grad(set_to_none=True)
            if hasattr(sampler, "set_epoch"):  # a fixed list of batches (tests) has no epochs
                sampler.set_epoch(epoch, skip=skip)
            # making the iterator draws from the global RNG: a state saved at an epoch start is
            # restored before it, one saved mid-epoch after it, as the uninterrupted run had them
            if saved is not None and skip == 0:
                restore_rng(saved)
            batches = iter(train_loader)
            if saved is not None and skip > 0:
                restore_rng(saved)
            saved = None
            window_finite = True  # every loss of the current accumulation window
            bar = tqdm(batches, total=n_batches, initial=skip, desc=f"epoch {epoch}/{cfg.epochs}",
                       disable=not show_bar, leave=False)
            for step, batch in enumerate(bar, start=skip + 1):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                boundary = step % accumulation == 0 or step == n_batches  # else gradients accumulate
                # DDP all-reduces gradients only on the micro-batch before an optimizer step
                with _no_sync(model) if not boundary else contextlib.nullcontext():
                    with precision.autocast():
                        logits = model(batch)  # (B, C)
                    loss = loss_fn(logits, batch["labels"])
                    scaler.scale(loss / accumulation_window(step, accumulation, n_batches)).backward()
                batch_loss, batch_size = loss.item(), batch["labels"].shape[0]
                window_finite = window_finite and math.isfinite(batch_loss)
                if math.isfinite(batch_loss):  # an fp16 overflow the scaler skips is no training loss
                    progress.loss_sum += batch_loss * batch_size
                    progress.n_texts += batch_size
                if step_record:
                    step_record.count(batch_size)
                if boundary:
                    scaler.unscale_(optimizer)
                    grad_norm = float(_clip_or_measure(trainable, cfg.max_grad_norm))
                    # under DDP the norm is of the all-reduced gradients, the same on every rank, and a
                    # rank's non-finite loss makes it non-finite: every rank decides alike
                    divergence.step(epoch, step, n_batches, batch_loss if dist.enabled or window_finite else math.nan,
                                    grad_norm)
                    window_finite = True
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress.opt_steps += 1
                    progress.batches_done = step
                if step % cfg.log_every_steps == 0 or step == n_batches:
                    log.info(_step_line(epoch, step, n_batches, batch_loss, optimizer, progress.opt_steps, device))
                    if step_record:
                        step_record.step(epoch, step, progress.opt_steps, batch_loss, optimizer)
                    bar.set_postfix(loss=f"{batch_loss:.4f}")
                if not boundary:
                    continue
                signum = dist.first(stop.signum)  # all ranks stop at the same step, or the others would hang
                if signum:
                    _interrupt(signum, save(signal.Signals(signum).name))
                if cfg.save_every_steps and progress.opt_steps % cfg.save_every_steps == 0 and step < n_batches:
                    save(f"every {cfg.save_every_steps} optimizer steps")

            val = scores(gather(predict(unwrap(model), val_loader, precision, device), dist), "val")
            divergence.validation(epoch, val["val/loss"])  # before any checkpoint of these weights
            epoch_seconds = epoch_before + time.perf_counter() - epoch_start
            loss_sum, n_texts = dist.sum([progress.loss_sum, progress.n_texts])  # over all ranks' texts
            entry = {"epoch": epoch, "train/loss": loss_sum / max(1, n_texts), **val,
                     "opt_steps": progress.opt_steps, "epoch_seconds": epoch_seconds,
                     "train/texts_per_second": n_texts / epoch_seconds}
            progress.history.append(entry)
            if step_record:
                step_record.epoch(entry)
            value = val[f"val/{cfg.best_metric.value}"]
            improved = is_better(value, progress.best_value, cfg.best_metric)
            if improved:
                progress.best_epoch, progress.best_value = epoch, value
                save_best()
            log.info(
                "epoch %d/%d: train/loss=%.4f val/loss=%.4f val/accuracy=%.4f val/macro_f1=%.4f (%.1f s)%s",
                epoch, cfg.epochs, entry["train/loss"], val["val/loss"], val["val/accuracy"], val["val/macro_f1"],
                epoch_seconds, f"  new best val/{cfg.best_metric.value} -> best_model.pt" if improved else "",
            )
            patience = cfg.early_stopping_patience
            if patience and epoch - progress.best_epoch >= patience and epoch < cfg.epochs:
                log.info("early stopping: no better val/%s for %d epochs (best %.4f at epoch %d)",
                         cfg.best_metric.value, patience, progress.best_value, progress.best_epoch)
                progress.stopped_early = True
            if epoch == cfg.epochs or progress.stopped_early:
                break
            progress.epoch, progress.batches_done, progress.loss_sum, progress.n_texts = epoch + 1, 0, 0.0, 0
            epoch_start, epoch_before = time.perf_counter(), 0.0
            where = save("epoch end")
            signum = dist.first(stop.signum)
            if signum:
                _interrupt(signum, where)

    progress.train_seconds = trained_before + time.perf_counter() - process_start
    return progress


def _clip_or_measure(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The gradients' total norm, clipped to ``max_norm`` when that is > 0 (the norm is needed either
    way: the divergence check reads it)."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])


def _lr_hint(cfg: TrainingConfig) -> str:
    rates = f"training.learning_rate={cfg.learning_rate:g}"
    if not cfg.freeze_backbone:
        rates += f", training.encoder_learning_rate={cfg.encoder_learning_rate:g}"
    return f"lower the learning rate ({rates}) or set training.max_grad_norm; no checkpoint of this state was kept"


def _no_sync(model: nn.Module):
    return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _interrupt(signum: int, state_path: str) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}; training state saved in {state_path}", signum)


def _step_line(epoch: int, step: int, n_batches: int, loss: float, optimizer: torch.optim.Optimizer,
               opt_steps: int, device: torch.device) -> str:
    lrs = " ".join(f"lr[{g.get('name', i)}]={g['lr']:.3e}" for i, g in enumerate(optimizer.param_groups))
    line = f"epoch={epoch} step={step}/{n_batches} batch_loss={loss:.4f} {lrs} opt_steps={opt_steps}"
    if device.type == "cuda":
        line += f" gpu_mem={torch.cuda.memory_allocated(device) / 2**20:.0f}MiB peak={torch.cuda.max_memory_allocated(device) / 2**20:.0f}MiB"
    return line
