"""A diverging run ends as a failure, never as a success.

fp32 and bf16: the first optimizer step whose gradient norm or training loss is not finite stops
the run. fp16: the GradScaler skips a step whose gradients overflowed and lowers its scale, which is
routine; ``MAX_SKIPPED_STEPS`` skipped steps in a row (the scale fell from 65536 to below 1e-2
without recovering) are divergence.
"""

from __future__ import annotations

import math

from finetune_pipeline.errors import PipelineError

MAX_SKIPPED_STEPS = 24


class Diverged(PipelineError):
    """Training produced non-finite losses or gradients; no checkpoint of that state is kept."""


class DivergenceCheck:
    def __init__(self, uses_grad_scaler: bool, hint: str):
        self.uses_grad_scaler = uses_grad_scaler
        self.hint = hint  # what to change, e.g. "lower training.learning_rate (now 1e+06)"
        self.skipped_in_a_row = 0

    def step(self, epoch: int, step: int, n_batches: int, loss: float, grad_norm: float) -> None:
        """After each optimizer step's backward passes: ``loss`` of its last micro-batch, ``grad_norm``
        of the (unscaled) gradients."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.skipped_in_a_row = 0
            return
        if self.uses_grad_scaler:
            self.skipped_in_a_row += 1  # GradScaler skipped this step and halved its scale
            if self.skipped_in_a_row < MAX_SKIPPED_STEPS:
                return
        repeated = f" ({self.skipped_in_a_row} steps in a row)" if self.uses_grad_scaler else ""
        raise Diverged(
            f"training diverged at epoch {epoch}, step {step}/{n_batches}: loss={loss:g}, "
            f"gradient norm={grad_norm:g}{repeated}; {self.hint}"
        )

    def validation(self, epoch: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise Diverged(f"training diverged by the end of epoch {epoch}: val/loss={loss:g}; {self.hint}")
