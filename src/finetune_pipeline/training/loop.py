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
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from finetune_pipeline.config.schema import BestMetric, TrainingConfig
from finetune_pipeline.runtime.attention import AttentionByLength
from finetune_pipeline.runtime.distributed import SINGLE, Dist, unwrap
from finetune_pipeline.runtime.dropout import word_masks
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.runtime.signals import Interrupted, stop_on_signals
from finetune_pipeline.training.divergence import DivergenceCheck
from finetune_pipeline.training.loss import Loss, training_loss
from finetune_pipeline.training.metrics import Predictions, gather, predict, scores
from finetune_pipeline.training.schedule import accumulation_window
from finetune_pipeline.training.state import Progress, Trainer, restore_rng
from finetune_pipeline.training.step_record import StepRecord

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
    loss_fn: Loss | None = None,
    dist: Dist = SINGLE,
    step_record: StepRecord | None = None,
    lr_hint: str | None = None,
    on_validated: Callable[[int, Predictions], None] | None = None,
    attention: AttentionByLength | None = None,
    word_dropout: bool = False,
) -> Progress:
    """Train up to ``cfg.epochs``; ``save_best`` runs whenever the validation metric improves.

    ``save_state(progress)`` stores the training state (and returns where, for messages) at every
    epoch end, every ``cfg.save_every_steps`` optimizer steps, and on SIGINT/SIGTERM, after which
    ``Interrupted`` is raised. ``resume``: a saved ``Progress`` and its RNG states, to go on from.
    ``loss_fn``: the training loss (``loss.training_loss``; default plain cross-entropy); validation
    uses plain cross-entropy. ``step_record``: where the logged steps and the epochs go as JSON lines
    (``metrics.jsonl``). ``lr_hint``: which learning rates a divergence message names.
    ``on_validated(epoch, predictions)``: each epoch's gathered validation predictions (the last
    epoch's are the final weights' own, so calibrating those weights need not predict them again).
    ``attention``: the encoder's attention kernel chosen per training batch by its padded length.
    ``word_dropout``: training forward passes draw dropout masks four to a random word
    (``runtime.dropout``; CPU).
    Under torchrun ``trainer.model`` is DDP-wrapped; every rank validates its share of the batches
    and the predictions are gathered, so all ranks see the same metrics and take the same decisions.
    """
    progress, saved_rng = resume if resume else (Progress(), None)
    clock = _StateClock(progress, save_state, len(train_loader))
    hint = (
        f"lower the learning rate ({lr_hint or _lr_hint(cfg)}) or set training.max_grad_norm; no checkpoint of "
        "this state was kept"
    )
    loop = _EpochLoop(
        trainer,
        train_loader,
        precision,
        device,
        cfg,
        loss_fn or training_loss(None, 0.0),
        dist,
        step_record,
        DivergenceCheck(precision.uses_grad_scaler, hint),
        on_validated,
        attention,
        word_dropout,
    )
    with stop_on_signals() as stop, logging_redirect_tqdm():
        for epoch in range(progress.epoch, cfg.epochs + 1):
            progress.epoch = epoch
            clock.start_epoch()
            batches = _batches_from(train_loader, epoch, progress.batches_done, saved_rng)
            saved_rng = None  # restored once: every later epoch draws on from there
            loop.train_epoch(batches, progress, stop, clock)
            entry = loop.validate(val_loader, progress, clock)
            _keep_if_best(progress, entry, cfg, save_best)
            if _stops_early(progress, cfg) or epoch == cfg.epochs:
                break
            progress.epoch, progress.batches_done, progress.loss_sum, progress.n_texts = epoch + 1, 0, 0.0, 0
            clock.start_epoch(fresh=True)
            where = clock.save("epoch end")
            _stop_if_signalled(stop, dist, where)
    clock.finish()
    return progress


class _StateClock:
    """Training time across processes (a resumed run adds to what its state recorded), and the one
    way the training state is saved and logged."""

    def __init__(self, progress: Progress, save_state: Callable[[Progress], str], n_batches: int):
        self.progress, self.save_state, self.n_batches = progress, save_state, n_batches
        self.process_start, self.trained_before = time.perf_counter(), progress.train_seconds
        self.epoch_start, self.epoch_before = self.process_start, progress.epoch_seconds

    def start_epoch(self, fresh: bool = False) -> None:
        """``fresh``: a new epoch (its seconds start at 0); else the epoch the progress is in."""
        self.epoch_start = time.perf_counter()
        self.epoch_before = 0.0 if fresh else self.progress.epoch_seconds

    def epoch_seconds(self) -> float:
        return self.epoch_before + time.perf_counter() - self.epoch_start

    def save(self, reason: str) -> str:
        now = time.perf_counter()
        self.progress.train_seconds = self.trained_before + now - self.process_start
        self.progress.epoch_seconds = self.epoch_seconds()
        where = self.save_state(self.progress)
        size = os.path.getsize(where) if os.path.isfile(where) else 0
        p = self.progress
        log.info(
            "training state saved (%s): epoch %d, %d/%d batches, %d optimizer steps -> %s (%.1f MB in %.2f s)",
            reason,
            p.epoch,
            p.batches_done,
            self.n_batches,
            p.opt_steps,
            where,
            size / 1e6,
            time.perf_counter() - now,
        )
        return where

    def finish(self) -> None:
        self.progress.train_seconds = self.trained_before + time.perf_counter() - self.process_start


def _batches_from(train_loader: DataLoader, epoch: int, skip: int, saved_rng: dict | None):
    """The epoch's batch iterator, ``skip`` batches in (a resumed run), with the RNG states a resumed
    run saved restored where the uninterrupted run had them: making the iterator draws from the
    global RNG, so a state saved at an epoch start is restored before it, one saved mid-epoch after."""
    sampler = train_loader.batch_sampler
    if hasattr(sampler, "set_epoch"):  # a fixed list of batches (tests) has no epochs
        sampler.set_epoch(epoch, skip=skip)
    if saved_rng is not None and skip == 0:
        restore_rng(saved_rng)
    batches = iter(train_loader)
    if saved_rng is not None and skip > 0:
        restore_rng(saved_rng)
    return batches


class _EpochLoop:
    """One epoch's forward/backward passes and optimizer steps, and its validation: what ``fit``
    repeats. Holds the loop's fixed inputs; the state that moves is the ``Progress``."""

    def __init__(
        self,
        trainer: Trainer,
        train_loader: DataLoader,
        precision: Precision,
        device: torch.device,
        cfg: TrainingConfig,
        loss_fn: Loss,
        dist: Dist,
        step_record: StepRecord | None,
        divergence: DivergenceCheck,
        on_validated: Callable[[int, Predictions], None] | None = None,
        attention: AttentionByLength | None = None,
        word_dropout: bool = False,
    ):
        self.trainer, self.train_loader, self.precision, self.device = trainer, train_loader, precision, device
        self.cfg, self.loss_fn, self.dist, self.step_record, self.divergence = (
            cfg,
            loss_fn,
            dist,
            step_record,
            divergence,
        )
        self.on_validated, self.attention, self.word_dropout = on_validated, attention, word_dropout
        self.trainable = [p for p in trainer.model.parameters() if p.requires_grad]
        self.n_batches = len(train_loader)
        self.last_line = -math.inf  # when the last step line was logged (training.log_every_seconds)

    def train_epoch(self, batches, progress: Progress, stop, clock: _StateClock) -> None:
        model, optimizer, scaler = self.trainer.model, self.trainer.optimizer, self.trainer.scaler
        cfg, accumulation, n_batches = self.cfg, self.cfg.gradient_accumulation_steps, self.n_batches
        model.train()  # a frozen encoder stays in eval mode (see TextClassifier.train)
        optimizer.zero_grad(set_to_none=True)
        skip, epoch = progress.batches_done, progress.epoch
        bar = tqdm(
            batches,
            total=n_batches,
            initial=skip,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress_bar and sys.stderr.isatty()),
        )
        window_finite = True  # every loss of the current accumulation window
        for step, batch in enumerate(bar, start=skip + 1):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            boundary = step % accumulation == 0 or step == n_batches  # else gradients accumulate
            # DDP all-reduces gradients only on the micro-batch before an optimizer step
            kernel = self.attention.step(batch["input_ids"].shape[1]) if self.attention else contextlib.nullcontext()
            with _no_sync(model) if not boundary else contextlib.nullcontext(), kernel:
                with self.precision.autocast(), word_masks() if self.word_dropout else contextlib.nullcontext():
                    logits = model(batch)  # (B, C)
                loss = self.loss_fn(logits, batch["labels"])
                scaler.scale(loss / accumulation_window(step, accumulation, n_batches)).backward()
            batch_loss, batch_size = loss.item(), batch["labels"].shape[0]
            window_finite = window_finite and math.isfinite(batch_loss)
            if math.isfinite(batch_loss):  # an fp16 overflow the scaler skips is no training loss
                progress.loss_sum += batch_loss * batch_size
                progress.n_texts += batch_size
            if self.step_record:
                self.step_record.count(batch_size)
            if boundary:
                # under DDP a rank's non-finite loss makes the all-reduced norm non-finite: all decide alike
                self._optimizer_step(epoch, step, batch_loss if self.dist.enabled or window_finite else math.nan)
                window_finite = True
                progress.opt_steps += 1
                progress.batches_done = step
            if step % cfg.log_every_steps == 0 or step == n_batches:
                now = time.monotonic()
                if step == n_batches or now - self.last_line >= cfg.log_every_seconds:  # the log: by time
                    self.last_line = now
                    log.info(_step_line(epoch, step, n_batches, batch_loss, optimizer, progress.opt_steps, self.device))
                if self.step_record:  # metrics.jsonl and the trackers: every log_every_steps
                    self.step_record.step(epoch, step, progress.opt_steps, batch_loss, optimizer)
                bar.set_postfix(loss=f"{batch_loss:.4f}")
            if boundary:
                signum = self.dist.first(stop.signum)  # all ranks stop at the same step, or the others would hang
                if signum:
                    _interrupt(signum, clock.save(signal.Signals(signum).name))
                if cfg.save_every_steps and progress.opt_steps % cfg.save_every_steps == 0 and step < n_batches:
                    clock.save(f"every {cfg.save_every_steps} optimizer steps")

    def _optimizer_step(self, epoch: int, step: int, loss: float) -> None:
        optimizer, scaler = self.trainer.optimizer, self.trainer.scaler
        scaler.unscale_(optimizer)
        grad_norm = float(_clip_or_measure(self.trainable, self.cfg.max_grad_norm))
        self.divergence.step(epoch, step, self.n_batches, loss, grad_norm)  # before the step changes any weight
        scaler.step(optimizer)
        scaler.update()
        self.trainer.scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def validate(self, val_loader: DataLoader, progress: Progress, clock: _StateClock) -> dict:
        """The epoch's history entry: train loss, validation metrics, steps and speed."""
        model, dist = self.trainer.model, self.dist
        predictions = gather(predict(unwrap(model), val_loader, self.precision, self.device), dist)
        if self.on_validated:
            self.on_validated(progress.epoch, predictions)
        val = scores(predictions, "val")
        self.divergence.validation(progress.epoch, val["val/loss"])  # before any checkpoint of these weights
        epoch_seconds = clock.epoch_seconds()
        loss_sum, n_texts = dist.sum([progress.loss_sum, progress.n_texts])  # over all ranks' texts
        entry = {
            "epoch": progress.epoch,
            "train/loss": loss_sum / max(1, n_texts),
            **val,
            "opt_steps": progress.opt_steps,
            "epoch_seconds": epoch_seconds,
            "train/texts_per_second": n_texts / epoch_seconds,
        }
        progress.history.append(entry)
        if self.step_record:
            self.step_record.epoch(entry)
        return entry


def _keep_if_best(progress: Progress, entry: dict, cfg: TrainingConfig, save_best: Callable[[], None]) -> None:
    value = entry[f"val/{cfg.best_metric.value}"]
    improved = is_better(value, progress.best_value, cfg.best_metric)
    if improved:
        progress.best_epoch, progress.best_value = progress.epoch, value
        save_best()
    log.info(
        "epoch %d/%d: train/loss=%.4f val/loss=%.4f val/accuracy=%.4f val/macro_f1=%.4f (%.1f s)%s",
        progress.epoch,
        cfg.epochs,
        entry["train/loss"],
        entry["val/loss"],
        entry["val/accuracy"],
        entry["val/macro_f1"],
        entry["epoch_seconds"],
        f"  new best val/{cfg.best_metric.value} -> best_model.pt" if improved else "",
    )


def _stops_early(progress: Progress, cfg: TrainingConfig) -> bool:
    """``early_stopping_patience`` epochs without a better validation value (never after the last epoch)."""
    patience = cfg.early_stopping_patience
    if patience and progress.epoch - progress.best_epoch >= patience and progress.epoch < cfg.epochs:
        log.info(
            "early stopping: no better val/%s for %d epochs (best %.4f at epoch %d)",
            cfg.best_metric.value,
            patience,
            progress.best_value,
            progress.best_epoch,
        )
        progress.stopped_early = True
    return progress.stopped_early


def _stop_if_signalled(stop, dist: Dist, where: str) -> None:
    signum = dist.first(stop.signum)
    if signum:
        _interrupt(signum, where)


def _clip_or_measure(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The gradients' total norm, clipped to ``max_norm`` when that is > 0 (the norm is needed either
    way: the divergence check reads it)."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])


def _lr_hint(cfg: TrainingConfig) -> str:
    """The learning rates a divergence message names, when the caller did not say (``lr_hint``)."""
    rates = f"training.learning_rate={cfg.learning_rate:g}"
    if not cfg.freeze_backbone:
        rates += f", training.encoder_learning_rate={cfg.encoder_learning_rate:g}"
    return rates


def _no_sync(model: nn.Module):
    return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _interrupt(signum: int, state_path: str) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}; training state saved in {state_path}", signum)


def _step_line(
    epoch: int,
    step: int,
    n_batches: int,
    loss: float,
    optimizer: torch.optim.Optimizer,
    opt_steps: int,
    device: torch.device,
) -> str:
    lrs = " ".join(f"lr[{g.get('name', i)}]={g['lr']:.3e}" for i, g in enumerate(optimizer.param_groups))
    line = f"epoch={epoch} step={step}/{n_batches} batch_loss={loss:.4f} {lrs} opt_steps={opt_steps}"
    if device.type == "cuda":
        now, peak = torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
        line += f" gpu_mem={now:.0f}MiB peak={peak:.0f}MiB"
    return line
