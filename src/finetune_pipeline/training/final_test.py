"""Recipe step 6: the best epoch's weights on the test split, calibrated first (temperature scaling
on validation; best_model.pt written again with its temperature)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.evaluation.calibration import ece, nll, rescaled
from finetune_pipeline.model.loading import restore_weights
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.training.builders import BuiltModel
from finetune_pipeline.training.calibration import Temperature, fit_temperature
from finetune_pipeline.training.metrics import Predictions, gather, predict

log = logging.getLogger(__name__)


def best_on_test(
    run_dir: Path,
    built: BuiltModel,
    precision: Precision,
    device: torch.device,
    dist: Dist,
    calibrate: bool,
    rewrite_best: Callable[[], None],
) -> tuple[Predictions, dict]:
    """Test predictions of the best epoch's weights, gathered from all ranks. With ``calibrate``, its
    temperature is fitted on validation and best_model.pt written again with it; the predictions are
    then the calibrated ones, and the record says what calibration changed on test (ECE, NLL)."""
    dist.barrier()  # best_model.pt is written by rank 0
    best = torch.load(run_dir / BEST_MODEL_FILE, map_location=device, weights_only=True)["state_dict"]
    restore_weights(built.model, best)
    set_temperature(built, 1.0)
    raw = gather(predict(built.model, built.loaders.test, precision, device), dist)
    if not calibrate:
        return raw, {"method": "none"}
    fitted = fit_model_temperature(built, precision, device, dist)
    set_temperature(built, fitted.value)
    rewrite_best()
    probs = rescaled(raw.probs, fitted.value)
    calibrated = dataclasses.replace(raw, probs=probs, loss=nll(probs, raw.y_true))
    record = {
        "method": "temperature",
        "temperature": fitted.value,
        "val_nll_before": fitted.val_nll_before,
        "val_nll_after": fitted.val_nll_after,
        "ece_before": ece(raw.probs, raw.y_true),
        "ece_after": ece(probs, raw.y_true),
        "nll_before": raw.loss,
        "nll_after": calibrated.loss,
    }
    log.info(
        "calibration: temperature %.3f (validation NLL %.4f -> %.4f); test ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        fitted.value,
        fitted.val_nll_before,
        fitted.val_nll_after,
        record["ece_before"],
        record["ece_after"],
        record["nll_before"],
        record["nll_after"],
    )
    return calibrated, record


def fit_model_temperature(built: BuiltModel, precision: Precision, device: torch.device, dist: Dist) -> Temperature:
    """The model's temperature, fitted on the validation split (all ranks' predictions: the same T everywhere)."""
    set_temperature(built, 1.0)
    val = gather(predict(built.model, built.loaders.val, precision, device), dist)
    return fit_temperature(val.probs, val.y_true)


def set_temperature(built: BuiltModel, value: float) -> None:
    built.model.config = dataclasses.replace(built.model.config, temperature=value)
