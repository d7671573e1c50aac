"""TensorBoard: event files in the run folder; the config and results in the HParams tab.

``tensorboard --logdir <sweep folder>`` shows every job as a run, and the HParams tab compares
them by their config values against their test and best validation metrics.
"""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.config.schema import TensorBoardConfig
from finetune_pipeline.tracking.trackers import RunLabels

RESULT_PREFIXES = ("test_", "best_")  # the one-point results (trackers.result_names)


class TensorBoardTracker:
    def __init__(self, cfg: TensorBoardConfig):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.cfg, self._writer_class = cfg, SummaryWriter
        self.writer = None
        self.params: dict[str, object] = {}
        self.results: dict[str, float] = {}

    def start(self, run_dir: Path, labels: RunLabels, stored: dict, parent: dict) -> dict:
        folder = run_dir / self.cfg.log_dir
        self.writer = self._writer_class(log_dir=str(folder))  # a resumed run adds an event file beside the first
        if labels.tags:
            self.writer.add_text("sweep job", "  \n".join(f"{k}: {v}" for k, v in labels.tags.items()))
        return {"log_dir": str(folder)}

    def log_params(self, params: dict[str, object]) -> None:
        self.params = dict(params)
        self.writer.add_text("config", "  \n".join(f"{k}: {v}" for k, v in params.items()))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.writer.add_text("tags", "  \n".join(f"{k}: {v}" for k, v in tags.items()))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
            if key.startswith(RESULT_PREFIXES):
                self.results[key] = float(value)

    def log_artifacts(self, run_dir: Path, names: list[str]) -> None:
        pass  # the event files sit in the run folder beside the artifacts

    def finish(self, status: str, message: str | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        if self.params:
            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.params.items()}
            values["status"] = status
            # the session records only: the metric values are the scalars logged above under the same tags
            for summary in hparams(values, self.results or {"status_only": 0.0}):
                self.writer.file_writer.add_summary(summary)
        if message:
            self.writer.add_text("error", message)
        self.writer.close()


TRACKER = TensorBoardTracker
