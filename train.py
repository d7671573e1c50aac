"""Train a text classifier over an mmBERT encoder.

    python train.py                                  # mmBERT-base from base_models/mmBERT-base
    python train.py backbone=tiny                    # offline smoke run, tiny random-init ModernBERT
    python train.py training.freeze_backbone=false   # fine-tune the encoder too
    python train.py -m model.hidden_dim=256,512      # a sweep, one folder per job
    python train.py resume=outputs/DATE/TIME         # continue a stopped run where it stopped
    torchrun --nproc_per_node=4 train.py ...         # DistributedDataParallel, one run folder

Config: conf/ (groups data, backbone, model, training, precision); artifacts: Hydra's run folder.
"""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from finetune_pipeline import distributed
from finetune_pipeline.config.load import register_resolvers, stored_config, to_config
from finetune_pipeline.config.schema import register_configs
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.sweep.jobs import FAILURE_FILE, read_job, record_failure
from finetune_pipeline.paths import ROOT_ENV
from finetune_pipeline.train import train
from finetune_pipeline.training.interrupt import Interrupted
from finetune_pipeline.training.state import STATE_FILE

# relative paths (data/, base_models/, outputs/) belong to the checkout this script lives in, even
# when the package was installed from another one
os.environ.setdefault(ROOT_ENV, str(Path(__file__).resolve().parent))
register_configs()
register_resolvers()
dist = distributed.init_from_env()  # under torchrun: join the ranks, agree on the run folder's name


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Returns the best validation value of training.best_metric (the objective for sweepers).

    In a sweep a failed job is recorded in its folder (failed.json) and returns NaN, so the sweep
    goes on and its summary lists the failure; a single run exits 1 with a one-line error.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs for everyone
    try:
        config = stored_config(run_dir, hydra_cfg.overrides.task) if cfg.resume else to_config(cfg)
        # a sweep job started again in its folder (SLURM requeue, the sweep re-run with the same
        # hydra.sweep.dir) goes on from its saved state, or is skipped when it had finished
        again = hydra_cfg.mode == RunMode.MULTIRUN and (run_dir / ".hydra").is_dir()
        if again and (run_dir / "metrics.json").is_file() and not (run_dir / STATE_FILE).is_file():
            logging.getLogger("train").info("job %s had finished; keeping its results", _shown(run_dir))
            return read_job(run_dir).best_value
        metrics = train(config, run_dir, resume=bool(cfg.resume) or (again and (run_dir / STATE_FILE).is_file()),
                        dist=dist)
    except Exception as e:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            record_failure(run_dir, e)
            if isinstance(e, Interrupted):  # stop the sweep too; its jobs resume from their folders
                logging.getLogger("train").warning(
                    "sweep stopped; to continue it, run the same command with hydra.sweep.dir=%s",
                    _shown(Path(hydra_cfg.sweep.dir)))
                sys.exit(e.exit_code)
            return float("nan")
        if isinstance(e, Interrupted):
            launcher = "torchrun ... " if dist.enabled else "python "
            logging.getLogger("train").warning("%s; resume with:\n  %s%s resume=%s",
                                               e, launcher, sys.argv[0], _shown(run_dir))
            sys.exit(e.exit_code)
        if isinstance(e, PipelineError):
            logging.getLogger("train").error("%s", e)
            sys.exit(1)
        raise
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier, interrupted attempt of this job
    return metrics[f"best/val/{config.training.best_metric.value}"]


def _shown(path: Path) -> str:
    """The run folder as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    try:
        main()
    finally:
        distributed.shutdown()
