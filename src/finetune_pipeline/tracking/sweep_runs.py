"""A sweep's parent run: opened when the sweep starts, closed with its summary files when it ends.

``<sweep folder>/tracking.json`` holds the parent's ids; each job (in this process or a launcher's)
reads it and becomes a child run. Running the same sweep folder again (a continued sweep, the next
Optuna invocation of a study) continues the same parent. As for runs, a tracker error is one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.artifacts.run_folder import FAILURE_FILE, flatten, one_line, run_name
from finetune_pipeline.config.schema import LoggerConfig
from finetune_pipeline.tracking.trackers import TRACKING_FILE, RunLabels, Trackers, describe

log = logging.getLogger(__name__)

SUMMARY_FILES = ["summary.csv", "summary.md", "summary.png", "multirun.yaml"]


def logger_config(config: DictConfig) -> LoggerConfig:
    """The typed ``logger`` node of a sweep's base config."""
    node = config.get("logger") or {}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LoggerConfig), node))


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: its sweep overrides (a=1,2) and an Optuna search space."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [k for k in params if k not in keys]


def open_sweep(cfg: LoggerConfig, sweep_dir: Path, swept: list[str], overrides: list[str]) -> None:
    """The parent run in each tracker that has one (MLflow; W&B groups jobs by name instead)."""
    stored = read_memo(sweep_dir / TRACKING_FILE)
    record: dict = {"swept": swept}
    name = run_name(sweep_dir)
    if cfg.mlflow is not None:
        try:
            from finetune_pipeline.tracking.mlflow_tracker import open_parent

            record["mlflow"] = open_parent(cfg.mlflow, RunLabels(name, {"sweep": "parent", "sweep.overrides": " ".join(overrides)}),
                                         sweep_dir, stored.get("mlflow") or {})
        except Exception as e:  # noqa: BLE001 -- a tracker never stops the sweep
            log.warning("logger mlflow: no parent run for the sweep (%s); its jobs are tracked on their own",
                        describe(e))
    if cfg.wandb is not None:
        record["wandb"] = {"group": name}
    if len(record) > 1:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_dir / TRACKING_FILE, record)


def close_sweep(cfg: LoggerConfig, sweep_dir: Path, failed: list[str]) -> None:
    """Summary files to the parent; FAILED when a job did not finish, with the jobs named."""
    stored = read_memo(sweep_dir / TRACKING_FILE).get("mlflow")
    if cfg.mlflow is None or not stored:
        return
    message = f"{len(failed)} job(s) did not finish: {', '.join(failed)}" if failed else None
    try:
        from finetune_pipeline.tracking.mlflow_tracker import close_parent

        close_parent(cfg.mlflow, stored, "failed" if failed else "finished", message, sweep_dir, SUMMARY_FILES)
    except Exception as e:  # noqa: BLE001
        log.warning("logger mlflow: could not close the sweep's parent run (%s)", describe(e))


def job_labels(sweep_dir: Path, job_num: int, overrides: list[str]) -> RunLabels:
    """A sweep job's name, tags and parent, as its trackers show it."""
    parent = read_memo(sweep_dir / TRACKING_FILE)
    swept = set(parent.get("swept") or ())
    varied = " ".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept) or " ".join(overrides)
    return RunLabels(name=f"{job_num}: {varied}" if varied else str(job_num),
                     tags={"sweep.job": str(job_num), "sweep.overrides": " ".join(overrides), "sweep.dir": str(sweep_dir)},
                     parent=parent)



def track_failed_job(config: DictConfig, run_dir: Path, labels: RunLabels, error: BaseException) -> None:
    """A sweep job whose config was refused (it never reached training) still shows up, FAILED."""
    try:
        cfg = logger_config(config)
    except Exception:  # noqa: BLE001 -- the logger node itself is what was wrong: nothing to track with
        return
    trackers = Trackers(run_dir, cfg)
    trackers.start(labels, resume=False)
    trackers.log_params(flatten(OmegaConf.to_container(config, resolve=False)))
    trackers.log_artifacts([FAILURE_FILE])
    trackers.finish("failed", one_line(error))
