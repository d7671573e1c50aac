"""Recipe step 6: the best epoch's weights on the test split, calibrated first on validation and
best_model.pt written again with it: one temperature (single-label), or per-label decision
thresholds (multi-label; folded into the logits, so a score of 0.5 is each label's threshold)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.evaluation.calibration import ece, label_ece, nll, rescaled
from finetune_pipeline.evaluation.multilabel import DEFAULT_THRESHOLD, multilabel_scores, shifted, tune_thresholds
from finetune_pipeline.model.loading import restore_weights
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.training.builders import BuiltModel
from finetune_pipeline.training.calibration import Temperature, fit_temperature
from finetune_pipeline.training.metrics import Predictions, gather, predict

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What calibration fitted on validation: a temperature, or per-label thresholds (None: not fitted)."""

    temperature: Temperature | None = None
    thresholds: np.ndarray | None = None
    skipped: str = ""  # why nothing was fitted


def best_on_test(
    run_dir: Path,
    built: BuiltModel,
    precision: Precision,
    device: torch.device,
    dist: Dist,
    calibrate: bool,
    min_texts: int,
    label_names: list[str],
    rewrite_best: Callable[[], None],
    best_val: Predictions | None = None,
) -> tuple[Predictions, dict]:
    """Test predictions of the best epoch's weights, gathered from all ranks. With ``calibrate``, its
    calibration is fitted on validation and best_model.pt written again with it; the predictions are
    then the calibrated ones, and the record says what calibration changed on test. ``best_val``:
    the best weights' raw validation predictions when the loop has them (the best epoch was the last)."""
    dist.barrier()  # best_model.pt is written by rank 0
    best = torch.load(run_dir / BEST_MODEL_FILE, map_location=device, weights_only=True)["state_dict"]
    restore_weights(built.model, best)
    uncalibrate(built)
    raw = gather(predict(built.model, built.loaders.test, precision, device), dist)
    if not calibrate:
        return raw, {"method": "none"}
    fitted = calibrate_model(built, precision, device, dist, min_texts, best_val)
    rewrite_best()
    if built.model.config.multi_label:
        return _thresholded(raw, fitted, label_names)
    value = fitted.temperature.value if fitted.temperature else 1.0
    probs = rescaled(raw.probs, value)
    calibrated = dataclasses.replace(raw, probs=probs, loss=nll(probs, raw.y_true))
    before = fitted.temperature.val_nll_before if fitted.temperature else None
    after = fitted.temperature.val_nll_after if fitted.temperature else None
    record = {
        "method": "temperature",
        "temperature": value,
        "val_nll_before": before,
        "val_nll_after": after,
        "ece_before": ece(raw.probs, raw.y_true),
        "ece_after": ece(probs, raw.y_true),
        "nll_before": raw.loss,
        "nll_after": calibrated.loss,
        **({"not_fitted": fitted.skipped} if fitted.skipped else {}),
    }
    log.log(
        logging.WARNING if fitted.skipped else logging.INFO,
        "calibration: temperature %.3f (%s); test ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        value,
        fitted.skipped or f"validation NLL {before:.4f} -> {after:.4f}",
        record["ece_before"],
        record["ece_after"],
        record["nll_before"],
        record["nll_after"],
    )
    return calibrated, record


def _thresholded(raw: Predictions, fitted: Fitted, label_names: list[str]) -> tuple[Predictions, dict]:
    """Multi-label test predictions with the tuned thresholds, and what they changed against 0.5."""
    labels = raw.probs.shape[1]
    thresholds = fitted.thresholds if fitted.thresholds is not None else np.full(labels, DEFAULT_THRESHOLD)
    probs = shifted(raw.probs, thresholds)
    decided = (probs >= DEFAULT_THRESHOLD).astype(np.int64)
    calibrated = dataclasses.replace(raw, probs=probs, y_pred=decided)
    fixed = multilabel_scores(raw.y_true, raw.probs, np.full(labels, DEFAULT_THRESHOLD))
    tuned = multilabel_scores(raw.y_true, raw.probs, thresholds)
    record = {
        "method": "thresholds",
        "thresholds": {name: float(t) for name, t in zip(label_names, thresholds)},
        "micro_f1_at_0.5": fixed["micro_f1"],
        "micro_f1_tuned": tuned["micro_f1"],
        "macro_f1_at_0.5": fixed["macro_f1"],
        "macro_f1_tuned": tuned["macro_f1"],
        "ece_before": float(np.mean(label_ece(raw.probs, raw.y_true))),
        "ece_after": float(np.mean(label_ece(probs, raw.y_true))),
        "ece_per_label": {name: float(e) for name, e in zip(label_names, label_ece(probs, raw.y_true))},
        **({"not_fitted": fitted.skipped} if fitted.skipped else {}),
    }
    log.log(
        logging.WARNING if fitted.skipped else logging.INFO,
        "calibration: per-label thresholds %s (%s); test micro-F1 %.4f at 0.5 -> %.4f tuned",
        ", ".join(f"{t:.2f}" for t in thresholds[:8]) + (" ..." if labels > 8 else ""),
        fitted.skipped or "tuned on validation for each label's F1",
        record["micro_f1_at_0.5"],
        record["micro_f1_tuned"],
    )
    return calibrated, record


def calibrate_model(
    built: BuiltModel,
    precision: Precision,
    device: torch.device,
    dist: Dist,
    min_texts: int,
    val: Predictions | None = None,
) -> Fitted:
    """Fit the model's calibration on the validation split (all ranks' predictions: the same everywhere)
    and set it on the model: a temperature, or (multi-label) per-label thresholds. With fewer than
    ``min_texts`` validation texts nothing is fitted (a fit on so few overfits: T or thresholds chase noise).
    ``val``: these weights' raw validation predictions, gathered, when already made (else predicted here)."""
    uncalibrate(built)
    if val is None:
        val = gather(predict(built.model, built.loaders.val, precision, device), dist)
    if len(val.y_true) < min_texts:
        skipped = (
            f"not fitted: {len(val.y_true)} validation texts, fewer than training.calibration_min_texts={min_texts}"
        )
        return Fitted(skipped=skipped)  # said once, with the test figures (best_on_test)
    if val.multi_label:
        thresholds = tune_thresholds(val.probs, val.y_true)
        built.model.config = dataclasses.replace(built.model.config, thresholds=tuple(map(float, thresholds)))
        return Fitted(thresholds=thresholds)
    fitted = fit_temperature(val.probs, val.y_true)
    built.model.config = dataclasses.replace(built.model.config, temperature=fitted.value)
    return Fitted(temperature=fitted)


def uncalibrate(built: BuiltModel) -> None:
    """The raw scores: temperature 1, no thresholds folded into the logits."""
    built.model.config = dataclasses.replace(built.model.config, temperature=1.0, thresholds=None)
