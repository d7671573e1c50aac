"""Temperature scaling (``training.calibration=temperature``): one scalar T fitted on the validation
split after training, so that softmax(logits / T) is as close to the true frequencies as one scalar
allows (Guo et al., 2017). The argmax, and so accuracy, never changes.

T minimises the validation NLL (LBFGS on log T, so T stays positive). T = 1 is kept when the fit does
not lower the validation NLL, so calibration never makes it worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from finetune_pipeline.evaluation.calibration import nll, rescaled

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


@dataclass(frozen=True)
class Temperature:
    value: float
    val_nll_before: float
    val_nll_after: float


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> Temperature:
    """The temperature for predictions whose softmax probabilities are ``probs`` (N, C) at T = 1."""
    before = nll(probs, y_true)
    if len(y_true) == 0:
        return Temperature(1.0, before, before)
    logits = torch.log(torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-300))  # = logits + a row constant
    target = torch.as_tensor(y_true, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    value = float(min(max(math.exp(float(log_t.detach())), MIN_TEMPERATURE), MAX_TEMPERATURE))
    after = nll(rescaled(probs, value), y_true)
    if not math.isfinite(value) or not after < before:
        return Temperature(1.0, before, before)
    return Temperature(value, before, after)
