"""What ``python train.py`` does with the config Hydra composed: run, resume, or continue a sweep job.

- a single run trains into Hydra's run folder; bad input exits 1 with one line; a stop signal
  exits 130/143 after printing the command that resumes;
- ``resume=<run folder>`` continues that run with its stored config;
- in a sweep a failed job is recorded in its folder (failed.json) and returns NaN, so the sweep
  goes on; a stopped job stops the sweep; a job started again in its folder (SLURM requeue, the
  sweep re-run with the same ``hydra.sweep.dir``) resumes from its state or, had it finished,
  keeps its results.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from finetune_pipeline.config.load import stored_config, to_config
from finetune_pipeline.distributed import Dist
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.sweep.jobs import FAILURE_FILE, read_job, record_failure
from finetune_pipeline.train import train
from finetune_pipeline.training.interrupt import Interrupted
from finetune_pipeline.training.state import STATE_FILE

log = logging.getLogger("train")


def run(cfg: DictConfig, dist: Dist, script: str) -> float:
    """Returns the best validation value of training.best_metric (the objective for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs for everyone
    try:
        config = stored_config(run_dir, hydra_cfg.overrides.task) if cfg.resume else to_config(cfg)
        has_state = (run_dir / STATE_FILE).is_file()
        if in_sweep and (run_dir / "metrics.json").is_file() and not has_state:
            log.info("job %s had finished; keeping its results", _shown(run_dir))
            return read_job(run_dir).best_value
        metrics = train(config, run_dir, resume=bool(cfg.resume) or (in_sweep and has_state), dist=dist)
    except Exception as e:
        if in_sweep:
            record_failure(run_dir, e)
            if isinstance(e, Interrupted):  # stop the sweep too; its jobs resume from their folders
                log.warning("sweep stopped; to continue it, run the same command with hydra.sweep.dir=%s",
                            _shown(Path(hydra_cfg.sweep.dir)))
                sys.exit(e.exit_code)
            return float("nan")
        if isinstance(e, Interrupted):
            if dist.is_main:
                launcher = "torchrun ... " if dist.enabled else "python "
                log.warning("%s; resume with:\n  %s%s resume=%s", e, launcher, script, _shown(run_dir))
            sys.exit(e.exit_code)
        if isinstance(e, PipelineError):
            log.error("%s", e)
            sys.exit(1)
        raise
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier, interrupted attempt of this job
    return metrics[f"best/val/{config.training.best_metric.value}"]


def _shown(path: Path) -> str:
    """A folder as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
