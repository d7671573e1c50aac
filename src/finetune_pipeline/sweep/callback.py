"""Hydra callback: a sweep's parent run in the trackers; when the sweep ends, its summary (also when
some jobs failed), logged to that parent run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from finetune_pipeline.artifacts.names import CONFIG_DIR
from finetune_pipeline.sweep.jobs import find_job_folders, read_job
from finetune_pipeline.tracking.sweep_runs import close_sweep, logger_config, open_sweep, swept_keys

log = logging.getLogger(__name__)

FAILED = ("failed", "diverged", "corrupt")


class SweepSummary(Callback):
    """Opens the sweep's parent run; at the end writes summary.json / .md / .csv / .png into the
    sweep folder and logs them to the parent; exits 1 if a job failed, diverged or left a corrupt record."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        open_sweep(
            logger_config(config), Path(config.hydra.sweep.dir), swept_keys(config), list(config.hydra.overrides.task)
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not any(sweep_dir.rglob(CONFIG_DIR)):
            return  # nothing ran (for example the sweep was refused at composition)
        from finetune_pipeline.sweep.compare import compare  # here: scipy's statistics cost every single run ~0.5 s

        log.info("sweep summary (%s):\n%s", sweep_dir, compare([sweep_dir], out_dir=sweep_dir))
        failed = [j for j in map(read_job, find_job_folders([sweep_dir])) if j.status in FAILED]
        close_sweep(logger_config(config), sweep_dir, [f"{j.folder.name} ({j.status})" for j in failed])
        if failed:
            log.error(
                "%d job(s) did not finish: %s", len(failed), ", ".join(f"{j.folder} ({j.status})" for j in failed)
            )
            raise SystemExit(1)
