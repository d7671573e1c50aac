"""What ended a run that did not finish, as ``failed.json`` records it (``artifacts/failure_record``)."""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.artifacts.failure_record import FailureRecord
from finetune_pipeline.errors import error_line
from finetune_pipeline.runtime.signals import Interrupted, Stopped
from finetune_pipeline.training.divergence import Diverged


def failure_status(error: BaseException) -> str:
    """``diverged`` (a non-finite loss), ``stopped`` (a signal or Ctrl-C) or ``failed`` (any other error)."""
    if isinstance(error, Diverged):
        return "diverged"
    if isinstance(error, (Interrupted, Stopped, KeyboardInterrupt)):
        return "stopped"
    return "failed"


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Mark a run as not finished, with its one-line error."""
    FailureRecord(failure_status(error), error_line(error), type(error).__name__).write(run_dir)
