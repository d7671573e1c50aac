"""``train(cfg, run_dir) -> metrics``: the one recipe, read top to bottom in ``_train``:

    1. data       preprocess if needed, class index, split, leakage   (training.prepare_data.setup_data)
    2. backbone   locate and check, tokenizer, label maps             (locate_backbone, _setup_tokenizer)
    3. model      one builder per training path; then the trackers'   (training.builders, _setup_model,
                  run opens and the data report is written             prepare_data.write_data_report)
    4. optimizer  AdamW, LR schedule, loss scaler, resumed state      (_setup_trainer, _resume_from)
    5. fit        training.loop.fit; the final weights' calibration   (training.final_test.calibrate_model)
    6. test       the best epoch's weights, calibrated, on the test split (training.final_test.best_on_test)
    7. artifacts  checkpoints, freeze proof, evaluation report, metrics.json

``cli/train.py`` decides what a command-line run does with its folder; tests call ``train`` directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from finetune_pipeline.artifacts.atomic import atomic_dir, remove_orphans, save_torch, write_json
from finetune_pipeline.artifacts.checkpoints import BackboneIdentity, CheckpointIdentity, tokenizer_sha256
from finetune_pipeline.artifacts.freeze_proof import build_freeze_proof, combined_sha256
from finetune_pipeline.artifacts.metrics_record import BestEpoch, RunMetrics
from finetune_pipeline.artifacts.names import (
    BEST_MODEL_FILE,
    DATA_REPORT_FILE,
    DATA_REPORT_MARKDOWN,
    DATA_REPORT_PLOT,
    EVALUATION_DIR,
    FAILURE_FILE,
    FINAL_MODEL_FILE,
    FREEZE_PROOF_FILE,
    HEAD_FILE,
    ID_TO_LABEL_FILE,
    LABEL_TO_ID_FILE,
    METRICS_FILE,
    STATE_FILE,
    STEP_LOG_FILE,
    TOKENIZER_DIR,
    TRAIN_LOG_FILE,
)
from finetune_pipeline.artifacts.run_folder import claim, is_failed_attempt, require_empty, require_stopped_run
from finetune_pipeline.backbone.identity import config_sha256
from finetune_pipeline.backbone.load import Backbone, load_tokenizer, locate_backbone
from finetune_pipeline.config.differences import flatten
from finetune_pipeline.config.load import training_path
from finetune_pipeline.config.schema import AttentionKernel, Calibration, Config, TrainingPath, init_seed
from finetune_pipeline.data.batches import TokenizedTexts, chunking_of, multi_hot
from finetune_pipeline.data.classes import ClassIndex
from finetune_pipeline.data.preprocess import source_name
from finetune_pipeline.data.source import dataset_name, processed_paths
from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import error_line
from finetune_pipeline.evaluation.report import write_evaluation
from finetune_pipeline.paths import resolve_path
from finetune_pipeline.runtime.attention import AttentionByLength
from finetune_pipeline.runtime.device import resolve_device
from finetune_pipeline.runtime.distributed import SINGLE, Dist, wrap
from finetune_pipeline.runtime.logs import log_to_file
from finetune_pipeline.runtime.precision import Precision, resolve_precision
from finetune_pipeline.runtime.provenance import provenance
from finetune_pipeline.runtime.signals import Interrupted, Stopped
from finetune_pipeline.tracking.trackers import RunLabels, Trackers, single_run_name
from finetune_pipeline.training.builders import BuildInputs, BuiltModel, build
from finetune_pipeline.training.compiled import compile_model, compile_wanted
from finetune_pipeline.training.failure import failure_status, record_failure
from finetune_pipeline.training.final_test import best_on_test, calibrate_model
from finetune_pipeline.training.loop import fit
from finetune_pipeline.training.loss import class_weights, positive_weights, training_loss
from finetune_pipeline.training.metrics import Predictions, scores
from finetune_pipeline.training.optim import build_optimizer
from finetune_pipeline.training.prepare_data import setup_data, write_data_report
from finetune_pipeline.training.schedule import build_scheduler, optimizer_steps
from finetune_pipeline.training.state import Progress, Trainer, data_identity, load_state, restore, save_state
from finetune_pipeline.training.step_record import StepRecord

log = logging.getLogger(__name__)

# what a finished run sends to its trackers besides metrics (train.log goes at the very end)
TRACKED_ARTIFACTS = [
    METRICS_FILE,
    DATA_REPORT_FILE,
    DATA_REPORT_MARKDOWN,
    DATA_REPORT_PLOT,
    FREEZE_PROOF_FILE,
    LABEL_TO_ID_FILE,
    ID_TO_LABEL_FILE,
    "evaluation/test",
    ".hydra/config.yaml",
]
CHECKPOINTS = [BEST_MODEL_FILE, FINAL_MODEL_FILE, HEAD_FILE]


def train(
    cfg: Config,
    run_dir: Path,
    resume: bool = False,
    dist: Dist = SINGLE,
    record: Callable[[Path], None] | None = None,
    retry_failed: bool = False,
    labels: RunLabels | None = None,
) -> dict[str, float]:
    """Train one classifier; every artifact goes to ``run_dir``. Returns the headline metrics.

    The folder must be empty, or with ``resume=True`` hold a stopped run (its ``train_state.pt``),
    or with ``retry_failed=True`` (a sweep job started again) hold a failed attempt; one process
    writes to it at a time. ``record(run_dir)`` writes the config record (``.hydra/``) once the
    folder is held. A run that fails leaves ``failed.json`` with its one-line error. Under torchrun
    (``dist``) every rank calls this with the same folder; only rank 0 writes to it and logs to the
    trackers of ``cfg.logger`` (``labels``: how they name the run; default: its folder).
    """
    if dist.is_main and not resume and not retry_failed:
        require_empty(run_dir)  # before the lock file is made: a foreign folder is left untouched
    with claim(run_dir) if dist.is_main else contextlib.nullcontext():
        if dist.is_main:
            if resume:
                require_stopped_run(run_dir)
            elif not (retry_failed and is_failed_attempt(run_dir)):
                require_empty(run_dir)
            if record is not None:
                record(run_dir)
            _remove_orphans(cfg, run_dir)
        hf_logging.disable_progress_bar()  # weight-loading bars would drown the step log
        handler = log_to_file(run_dir / TRAIN_LOG_FILE) if dist.is_main else None
        trackers = Trackers(run_dir, cfg.logger) if dist.is_main else Trackers()
        tracking = _Tracking(trackers, labels or RunLabels(single_run_name(cfg, run_dir)), resume, cfg)
        try:
            log.info(
                "%s: %s%s",
                "resuming run folder" if resume else "run folder",
                run_dir,
                f" ({dist.world_size} processes, DistributedDataParallel)" if dist.enabled else "",
            )
            summary = _train(cfg, run_dir, resume, dist, tracking)
        except BaseException as e:
            if dist.is_main:
                record_failure(run_dir, e)
            if not isinstance(e, (Interrupted, Stopped, KeyboardInterrupt)):
                log.info("run failed; its log and any artifacts written so far are in %s", run_dir)
            if labels is not None:  # a sweep job is always in its sweep's tracker runs, even one failed at its start
                tracking.begin()
            trackers.log_artifacts([TRAIN_LOG_FILE, FAILURE_FILE])
            trackers.finish(failure_status(e), error_line(e))
            raise
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()
        if dist.is_main:
            (run_dir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier attempt's record
        trackers.log_artifacts([TRAIN_LOG_FILE])
        trackers.finish("finished")
        return summary


class _Tracking:
    """The run's tracker runs, opened once the model is built: a single run that fails before (no
    weights, data that cannot be split) leaves no tracker run behind."""

    def __init__(self, trackers: Trackers, labels: RunLabels, resume: bool, cfg: Config):
        self.trackers, self.labels, self.resume, self.cfg = trackers, labels, resume, cfg
        self.begun = False

    def begin(self) -> Trackers:
        if not self.begun:
            self.begun = True
            self.trackers.start(self.labels, self.resume)
            if not self.resume:
                self.trackers.log_params(flatten(dataclasses.asdict(self.cfg)))
        return self.trackers


def _remove_orphans(cfg: Config, run_dir: Path) -> None:
    """Temporary files of writers killed with -9 (or a power cut) in the folders this run writes to."""
    processed = processed_paths(cfg.data)
    folders = (
        run_dir,
        run_dir / EVALUATION_DIR,
        processed.folder,
        processed.mapping.parent,
        resolve_path(cfg.data.cache_dir),
        resolve_path(cfg.data.cache_dir) / "features",
    )
    for folder in folders:
        removed = remove_orphans(folder)
        if removed:
            log.warning(
                "%s: removed %d temporary file(s) left by a stopped process: %s",
                folder,
                len(removed),
                ", ".join(removed[:5]),
            )


def _train(cfg: Config, run_dir: Path, resume: bool, dist: Dist, tracking: _Tracking) -> dict[str, float]:
    started = time.perf_counter()
    state_path = run_dir / STATE_FILE
    # 1. data: preprocess if needed, index the classes, split
    data = setup_data(cfg, dist)
    dataset, classes, labels, split = data.dataset, data.classes, data.labels, data.split
    targets = multi_hot(labels, len(classes)) if data.multi_label else labels  # what the loaders batch
    # 2. backbone (checked, no weights yet) and its tokenizer; label maps and tokenizer into the run folder
    backbone = _main_first(
        dist, lambda: locate_backbone(cfg.backbone, cfg.data.max_length, dataset.texts, dataset.fingerprint)
    )
    tokenizer = _setup_tokenizer(cfg, backbone, classes, run_dir, dist)
    device, precision = _setup_device(cfg, dist)
    # 3. the model and its loaders, as the training path builds them; from here on the run is tracked
    path = training_path(cfg)
    built = _setup_model(
        cfg, path, backbone, tokenizer, dataset.texts, targets, split, len(classes), device, precision, dist
    )
    trackers = tracking.begin()
    if dist.is_main:
        write_data_report(cfg, data, tokenizer, run_dir, trackers)
        trackers.log_dataset(
            dataset_name(cfg.data),
            source_name(cfg.data),
            dataset.fingerprint,
            {"records": len(labels), "train": len(split.train), "val": len(split.val), "test": len(split.test)},
        )
    identity = BackboneIdentity(
        cfg.backbone.name, str(backbone.folder), combined_sha256(built.freeze.before), config_sha256(backbone.folder)
    )
    # 4. optimizer and schedule; a resumed run gets its saved state back
    trainer = _setup_trainer(cfg, path, built, precision, device, dist)
    data_id = data_identity(dataset.fingerprint, split, dist.world_size)
    resumed = _resume_from(state_path, trainer, data_id, cfg, len(built.loaders.train)) if resume else None
    weights = _class_weights(cfg, classes, [targets[i] for i in split.train], data.multi_label)
    origin = provenance()
    trackers.set_tags(_run_tags(identity, dataset.fingerprint, precision, device, dist, origin))
    setup_seconds = time.perf_counter() - started

    facts = CheckpointIdentity(
        identity,
        list(classes.id_to_label().values()),
        tokenizer_sha256(run_dir / TOKENIZER_DIR) if dist.is_main else "",
        precision.name,
    )

    def checkpoint(name: str) -> None:
        if dist.is_main:
            built.write_checkpoint(run_dir / name, facts)

    def save_state_file(progress: Progress) -> str:
        if dist.is_main:
            save_state(state_path, progress, trainer, data_id)
        return str(state_path)

    # 5. fit; the last epoch's validation predictions are the final weights' (calibration reuses them)
    validated: dict[int, Predictions] = {}
    result = fit(
        trainer,
        built.loaders.train,
        built.loaders.val,
        precision,
        device,
        cfg.training,
        save_best=lambda: checkpoint(BEST_MODEL_FILE),
        save_state=save_state_file,
        resume=resumed,
        loss_fn=training_loss(weights, cfg.training.label_smoothing, data.multi_label),
        dist=dist,
        step_record=StepRecord(run_dir / STEP_LOG_FILE, trackers) if dist.is_main else None,
        lr_hint=_learning_rates(cfg, path),
        on_validated=lambda epoch, predictions: validated.update({epoch: predictions}),
        attention=_attention_by_length(cfg, built, path, precision, device),
        word_dropout=_word_dropout(cfg, built, device),
    )
    final_val = validated.get(result.epoch)  # none when a resumed run had no epoch left to train
    calibrate = cfg.training.calibration == Calibration.temperature
    if calibrate:  # the final weights' temperature or thresholds (final_model.pt)
        calibrate_model(built, precision, device, dist, cfg.training.calibration_min_texts, final_val)
    checkpoint(FINAL_MODEL_FILE)
    if dist.is_main:
        _write_freeze_proof(run_dir, built, backbone)

    # 6. test the best epoch's weights (calibrated on validation first: best_model.pt gets its temperature)
    test_start = time.perf_counter()
    test_predictions, calibration = best_on_test(
        run_dir,
        built,
        precision,
        device,
        dist,
        calibrate,
        cfg.training.calibration_min_texts,
        classes.labels,
        lambda: checkpoint(BEST_MODEL_FILE),
        final_val if result.best_epoch == result.epoch else None,  # the best weights are the final ones
    )
    test = scores(test_predictions, "test")
    log.info(
        "test (best epoch %d): %saccuracy=%.4f macro_f1=%.4f micro_f1=%.4f loss=%.4f",
        result.best_epoch,
        "subset " if data.multi_label else "",
        test["test/accuracy"],
        test["test/macro_f1"],
        test["test/micro_f1"],
        test["test/loss"],
    )
    best_key = f"val/{cfg.training.best_metric.value}"
    summary = {"best/epoch": result.best_epoch, f"best/{best_key}": result.best_value, **test}
    if not dist.is_main:
        return summary

    # 7. artifacts
    save_torch(run_dir / HEAD_FILE, built.model.head.state_dict())
    test_texts = [dataset.texts[int(split.test[i])] for i in test_predictions.index]
    full_report = write_evaluation(
        run_dir / EVALUATION_DIR / "test",
        test_texts,
        test_predictions.y_true,
        test_predictions.probs,
        classes.symbols,
        classes.labels,
    )
    RunMetrics(
        summary=summary,
        history=result.history,
        best=BestEpoch(best_key, result.best_value, result.best_epoch, result.stopped_early),
        test={**test, "test/weighted_f1": full_report["weighted_f1"], "per_class": full_report["per_class"]},
        data={
            "records": len(labels),
            "classes": len(classes),
            "task": "multi_label" if data.multi_label else "single_label",
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
            "raw_fingerprint": dataset.fingerprint,
            "source": source_name(cfg.data),
            "text_field": cfg.data.text_field,
            "label_field": cfg.data.label_field,
            "label_separator": cfg.data.label_separator,
            "split": data.split_how,
            "leakage": data.leakage.count,
        },
        backbone={**identity.as_dict(), "pretrained": backbone.pretrained},
        features=built.features,
        loss={
            "class_weights": None if weights is None else dict(zip(classes.labels, weights.tolist())),
            "label_smoothing": cfg.training.label_smoothing,
        },
        device=str(device),
        processes=dist.world_size,
        precision=precision.name,
        timings={
            "setup_seconds": setup_seconds,
            "train_seconds": result.train_seconds,
            "test_seconds": time.perf_counter() - test_start,
            "total_seconds": time.perf_counter() - started,
        },
        provenance=origin,
        calibration=calibration,
    ).write(run_dir)
    state_path.unlink(missing_ok=True)  # finished: nothing to resume, and it can weigh gigabytes
    log.info("artifacts written to %s", run_dir)
    calibrated = (
        {
            "calibration/temperature": calibration["temperature"],
            "test/ece": calibration["ece_after"],
            "test/ece_uncalibrated": calibration["ece_before"],
        }
        if calibration.get("temperature")
        else {"test/ece": calibration["ece_after"], "test/ece_uncalibrated": calibration["ece_before"]}
        if calibration.get("thresholds")
        else {}
    )
    trackers.log_results(
        {**summary, "test/weighted_f1": full_report["weighted_f1"], **calibrated},
        step=result.history[-1]["opt_steps"] if result.history else 0,
    )
    trackers.log_artifacts(TRACKED_ARTIFACTS + (CHECKPOINTS if _log_checkpoints(cfg) else []))
    return summary


def _learning_rates(cfg: Config, path: TrainingPath) -> str:
    """The learning rates that act on this path (a divergence message names them)."""
    t = cfg.training
    head = f"training.learning_rate={t.learning_rate:g}"
    return head if path.head_only else f"{head}, training.encoder_learning_rate={t.encoder_learning_rate:g}"


def _run_tags(
    identity: BackboneIdentity, fingerprint: str, precision: Precision, device: torch.device, dist: Dist, origin: dict
) -> dict[str, str]:
    """What a tracker's run list needs to tell runs apart and trace them back."""
    git = origin["git"] or {}
    return {
        "backbone": identity.name,
        "backbone.sha256": identity.sha256,
        "data.raw_fingerprint": fingerprint,
        "precision": precision.name,
        "device": str(device),
        "world_size": str(dist.world_size),
        "git.commit": git.get("commit", "unknown"),
        "git.dirty": str(git.get("dirty", "unknown")),
        "mlflow.source.git.commit": git.get("commit", "unknown"),
    }


def _log_checkpoints(cfg: Config) -> bool:
    return bool(cfg.logger.mlflow and cfg.logger.mlflow.log_checkpoints)


def _setup_tokenizer(cfg: Config, backbone: Backbone, classes: ClassIndex, run_dir: Path, dist: Dist):
    """The backbone's tokenizer; rank 0 saves it and the label maps into the run folder."""
    tokenizer = load_tokenizer(backbone, cfg.backbone)
    tokenizer.model_max_length = cfg.data.max_length  # the saved tokenizer truncates as training did
    if dist.is_main:  # data and backbone checked: from here on the run folder fills with artifacts
        write_json(run_dir / LABEL_TO_ID_FILE, classes.label_to_id())
        write_json(run_dir / ID_TO_LABEL_FILE, classes.id_to_label())
        with atomic_dir(run_dir / TOKENIZER_DIR) as tmp:
            tokenizer.save_pretrained(tmp)
    log.info(
        "tokenizer: %s, %d tokens, texts truncated to %d", type(tokenizer).__name__, len(tokenizer), cfg.data.max_length
    )
    return tokenizer


def _class_weights(cfg: Config, classes: ClassIndex, train_labels: list, multi_label: bool) -> torch.Tensor | None:
    if multi_label:
        weights = positive_weights(train_labels, len(classes), cfg.training.class_weights)
    else:
        weights = class_weights(train_labels, len(classes), cfg.training.class_weights)
    if weights is not None:
        log.info(
            "loss: %s (%s) %s",
            "positive weights per label" if multi_label else "class weights",
            cfg.training.class_weights.value,
            ", ".join(f"{name}={w:.3f}" for name, w in zip(classes.labels, weights.tolist())),
        )
    return weights


def _setup_device(cfg: Config, dist: Dist) -> tuple[torch.device, Precision]:
    device = resolve_device(cfg.training.device, dist.local_rank if dist.enabled else None)
    precision = dist.broadcast(resolve_precision(cfg.precision.mixed_precision, device))  # one choice for all ranks
    log.info("device %s, precision %s (requested %s)", device, precision.name, cfg.precision.mixed_precision.value)
    return device, precision


def _setup_model(
    cfg: Config,
    path: TrainingPath,
    backbone: Backbone,
    tokenizer,
    texts: list[str],
    labels: list[int],
    split: Split,
    num_classes: int,
    device: torch.device,
    precision: Precision,
    dist: Dist,
) -> BuiltModel:
    """The texts tokenized once (truncated or chunked), then the builder of the run's training path."""
    log.info("training path: %s", path.value)
    tokenized = TokenizedTexts(texts, labels, tokenizer, cfg.data.max_length, chunking_of(cfg.data))
    return build(
        BuildInputs(cfg, path, backbone, tokenizer, texts, tokenized, split, num_classes, device, precision, dist)
    )


def _setup_trainer(
    cfg: Config, path: TrainingPath, built: BuiltModel, precision: Precision, device: torch.device, dist: Dist
) -> Trainer:
    """AdamW + warm-up and schedule + loss scaler; the model compiled if asked and DDP-wrapped under
    torchrun. Logs one line."""
    t = cfg.training
    optimizer = build_optimizer(
        built.model, t.learning_rate, t.encoder_learning_rate, t.weight_decay, t.fused_optimizer
    )
    total_steps = optimizer_steps(len(built.loaders.train), t.gradient_accumulation_steps, t.epochs)
    scheduler = build_scheduler(optimizer, total_steps, t.warmup_ratio, t.lr_schedule)
    log.info(
        "optimizer: AdamW%s, groups %s; %s schedule, %d optimizer steps",
        " (fused)" if optimizer.defaults.get("fused") else "",
        [g["name"] for g in optimizer.param_groups],
        t.lr_schedule.value,
        total_steps,
    )
    compile_model(built.model, t.compile, path, resolve_path(cfg.data.cache_dir))
    model = wrap(built.model, dist, device)
    if dist.enabled:
        torch.manual_seed(init_seed(cfg) + dist.rank)  # same initial weights (DDP checks), own dropout masks
    return Trainer(model, optimizer, scheduler, precision.grad_scaler())


def _attention_by_length(
    cfg: Config, built: BuiltModel, path: TrainingPath, precision: Precision, device: torch.device
) -> AttentionByLength | None:
    """Training steps through the whole encoder (full, LoRA) pick its attention kernel per batch;
    not when compiled (a switch would break the compiled graph's guards: SDPA throughout)."""
    if path not in (TrainingPath.full, TrainingPath.lora) or cfg.training.attention is AttentionKernel.sdpa:
        return None
    if compile_wanted(cfg.training.compile):
        return None
    return AttentionByLength.for_training(built.model.encoder, precision.name, device)


def _word_dropout(cfg: Config, built: BuiltModel, device: torch.device) -> bool:
    """CPU training steps draw dropout masks four to a random word (``runtime.dropout``); not when
    compiled (inductor draws its own) nor on a GPU (PyTorch's dropout is fast there)."""
    uses = device.type == "cpu" and not compile_wanted(cfg.training.compile)
    rates = sorted({m.p for m in built.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0})
    if uses and rates:
        log.info("dropout %s: masks drawn four to a 64-bit random word (CPU)", ", ".join(f"{p:g}" for p in rates))
    return uses


def _resume_from(state_path: Path, trainer: Trainer, data_id: dict, cfg: Config, n_batches: int):
    saved = load_state(state_path)
    progress = restore(saved, trainer, data_id, state_path)
    log.info(
        "resuming at epoch %d, batch %d/%d (%d optimizer steps done, best val/%s %.4f at epoch %d)",
        progress.epoch,
        progress.batches_done,
        n_batches,
        progress.opt_steps,
        cfg.training.best_metric.value,
        progress.best_value,
        progress.best_epoch,
    )
    return progress, saved["rng"]  # the weights are in the model now; keep only the RNG states


def _write_freeze_proof(run_dir: Path, built: BuiltModel, backbone: Backbone) -> None:
    evidence = built.freeze
    proof = build_freeze_proof(
        evidence.before,
        evidence.after(),
        built.model,
        str(backbone.folder),
        evidence.encoder_parameters,
        evidence.how,
        evidence.trained,
    )
    proof.write(run_dir)
    log.info(
        "freeze proof: %s (encoder sha256 %s -> %s)",
        proof.verdict,
        proof.encoder_sha256_before[:12],
        proof.encoder_sha256_after[:12],
    )


def _main_first(dist: Dist, build):
    """``build()`` on rank 0 first (it may write files, e.g. the tiny backbone), then on the others."""
    result = build() if dist.is_main else None
    dist.barrier()
    return result if dist.is_main else build()
