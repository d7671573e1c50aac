"""``failed.json``: the record of a run that did not finish, with its one-line error.

{"status": "failed" | "diverged" | "stopped", "error": str, "type": str}   # type: the exception's class
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.artifacts.names import FAILURE_FILE
from finetune_pipeline.errors import PipelineError

STATUSES = ("failed", "diverged", "stopped")


@dataclass(frozen=True)
class FailureRecord:
    status: str  # failed (an error) | diverged (a non-finite loss) | stopped (a signal)
    error: str  # the error's one line
    type: str  # the exception's class name

    def write(self, run_dir: Path) -> None:
        """Best effort: a full disk must not hide the error that ended the run."""
        try:
            write_json(run_dir / FAILURE_FILE, dataclasses.asdict(self))
        except PipelineError as e:
            logging.getLogger(__name__).warning("%s", e)

    @classmethod
    def read(cls, run_dir: Path) -> FailureRecord | None:
        """The run's record, or None when it has none; one that cannot be read is a failure all the same."""
        path = run_dir / FAILURE_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            status = raw.get("status") or ("stopped" if raw.get("type") == "Interrupted" else "failed")  # older records
            status = status if status in STATUSES else "failed"
            return cls(status, str(raw.get("error") or "no error recorded"), str(raw.get("type") or ""))
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
            return cls("failed", f"{path}: unreadable ({type(e).__name__})", "")
