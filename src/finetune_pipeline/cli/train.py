"""What ``python train.py`` does with the config Hydra composed: run, resume, or continue a sweep job.

- a single run trains into Hydra's run folder; bad input exits 1 with one line, and a run that
  fails before it wrote anything but its records (a bad config, no weights, data that cannot be
  split) leaves no folder; a stop signal exits 130/143 after printing the command that resumes;
- ``resume=<run folder>`` continues that run with its stored config;
- in a sweep a failed job is recorded in its folder (failed.json) and returns NaN, so the sweep
  goes on; a stopped job stops the sweep; a job started again in its folder (SLURM requeue, the
  sweep re-run with the same ``hydra.sweep.dir``) resumes from its state, keeps its results or
  retries a failed attempt -- only when its stored resolved config equals the new one; otherwise
  the sweep is refused with one line naming the job and the differing keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from finetune_pipeline.artifacts.names import (
    CONFIG_DIR,
    FAILURE_FILE,
    LOCK_FILE,
    METRICS_FILE,
    STATE_FILE,
    TRAIN_LOG_FILE,
)
from finetune_pipeline.artifacts.run_folder import claim, contents, write_config_record
from finetune_pipeline.config.differences import config_differences
from finetune_pipeline.config.load import (
    check_override_keys,
    check_single_run,
    register_resolvers,
    stored_config,
    to_config,
)
from finetune_pipeline.config.renamed import check_overrides
from finetune_pipeline.config.schema import Config, register_configs
from finetune_pipeline.errors import PipelineError, RunFolderRefused
from finetune_pipeline.paths import ROOT_ENV
from finetune_pipeline.runtime import distributed
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.runtime.logs import log_to_stderr
from finetune_pipeline.runtime.signals import Interrupted, Stopped, raise_on_signals
from finetune_pipeline.sweep.jobs import read_job
from finetune_pipeline.tracking.sweep_runs import job_labels, track_failed_job
from finetune_pipeline.training.failure import record_failure

log = logging.getLogger("train")


def launch(project: Path) -> None:
    """``python train.py``: Hydra's app over ``<project>/conf``, with ``<project>`` as the root of
    relative paths. Under torchrun, the process group is joined here, before Hydra names the run
    folder from the (shared) start time."""
    os.environ.setdefault(ROOT_ENV, str(project))
    try:
        check_overrides(sys.argv[1:])
        check_override_keys(sys.argv[1:])  # before Hydra: its message for an unknown key is six lines
        check_single_run(sys.argv[1:])
    except PipelineError as e:
        log_to_stderr()
        log.error("%s", e)
        sys.exit(getattr(e, "exit_code", 1))
    register_configs()
    dist, started = distributed.init_from_env()
    register_resolvers(started)

    @hydra.main(version_base="1.3", config_path=str(project / "conf"), config_name="config")
    def main(cfg: DictConfig) -> float:
        """Returns the best validation value of training.best_metric (the objective for sweepers)."""
        return run(cfg, dist, sys.argv[0])

    distributed.run_then_exit(main, dist)


def run(cfg: DictConfig, dist: Dist, script: str) -> float:
    """Returns the best validation value of training.best_metric (the objective for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs for everyone
    overrides = list(hydra_cfg.overrides.task)

    def record(folder: Path) -> None:
        write_config_record(folder, cfg, HydraConfig.instance().cfg, overrides)

    try:
        with raise_on_signals():
            return _run(cfg, dist, script, hydra_cfg, overrides, record)
    except Stopped as e:  # outside the training loop: preprocessing, encoding, testing, writing artifacts
        if dist.is_main:
            log.warning("%s; %s", e, _after_stop(run_dir, in_sweep, hydra_cfg, dist, script))
        sys.exit(e.exit_code)


def _run(cfg: DictConfig, dist: Dist, script: str, hydra_cfg, overrides: list[str], record) -> float:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if cfg.resume is not None:
            config, mode = stored_config(run_dir, overrides), "resume"
        else:
            try:
                config = to_config(cfg)
            except PipelineError as e:
                if in_sweep and not contents(run_dir):  # record the failed job in its (new) folder and trackers
                    with claim(run_dir):
                        record(run_dir)
                        record_failure(run_dir, e)
                        track_failed_job(
                            cfg, run_dir, job_labels(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, overrides), e
                        )
                raise
            if config.repeats:
                return run_repeats(
                    cfg,
                    config,
                    dist,
                    hydra_cfg,
                    overrides,
                    lambda repeat_cfg, repeat_overrides: (
                        lambda folder: write_config_record(
                            folder, repeat_cfg, HydraConfig.instance().cfg, repeat_overrides
                        )
                    ),
                )
            mode = sweep_job_mode(run_dir, config) if in_sweep else "new"
        if mode == "keep":
            log.info("job %s had finished with the same config; keeping its results", _shown(run_dir))
            return read_job(run_dir).best_value
        from finetune_pipeline.training.recipe import train  # here: a refused config never loads the model libraries

        labels = job_labels(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, overrides) if in_sweep else None
        metrics = train(
            config,
            run_dir,
            resume=mode == "resume",
            dist=dist,
            record=None if mode == "resume" else record,
            retry_failed=mode == "retry",
            labels=labels,
        )
    except Exception as e:
        if isinstance(e, Interrupted):  # in a sweep this stops the sweep; its jobs resume from their folders
            if in_sweep or dist.is_main:
                log.warning("%s; %s", e, _after_stop(run_dir, in_sweep, hydra_cfg, dist, script))
            sys.exit(e.exit_code)
        if not isinstance(e, PipelineError):
            raise
        log.error("%s", e)
        if in_sweep and not isinstance(e, RunFolderRefused):
            return float("nan")  # recorded in the job's failed.json; the sweep goes on
        if cfg.resume is None and dist.is_main and not isinstance(e, RunFolderRefused):
            forget_failed_start(run_dir)
        sys.exit(getattr(e, "exit_code", 1))
    return metrics[f"best/val/{config.training.best_metric.value}"]


START_RECORDS = {CONFIG_DIR, LOCK_FILE, TRAIN_LOG_FILE, FAILURE_FILE}  # what a run writes before its artifacts


def forget_failed_start(run_dir: Path) -> None:
    """A single run that failed before writing any artifact (its error is on the console) leaves no
    folder behind, nor an empty date folder: outputs/ keeps runs that trained."""
    try:
        if not {p.name for p in run_dir.iterdir()} <= START_RECORDS:
            return
    except OSError:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # only when empty


def run_repeats(cfg: DictConfig, config: Config, dist: Dist, hydra_cfg, overrides: list[str], record_for) -> float:
    """``repeats=[s1, s2, ...]``: the configuration trained once per data.seed, each a complete run
    folder ``<run>/seed-<s>/`` (its overrides end in ``data.seed=<s>``, so the sweep summary and
    finetune-compare see repeats of one configuration); ``<run>/repeats.json`` holds the values and
    their 95% interval. Returns their mean: an Optuna trial's objective. A repeat run again in its
    folder (a sweep continued) resumes, keeps or retries it, as a sweep job does. ``record_for(cfg,
    overrides)``: what writes a repeat's ``.hydra/`` record."""
    from finetune_pipeline.artifacts.atomic import write_json
    from finetune_pipeline.evaluation.statistics import t_interval
    from finetune_pipeline.training.recipe import train

    if any(o.lstrip("+~").startswith("data.seed=") for o in overrides):
        raise PipelineError("repeats= sets data.seed for each repeat; drop the data.seed override")
    run_dir, in_sweep = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    metric = f"best/val/{config.training.best_metric.value}"
    values = []
    for seed in config.repeats:
        folder = run_dir / f"seed-{seed}"
        repeat_cfg = cfg.copy()
        OmegaConf.update(repeat_cfg, "data.seed", seed)
        OmegaConf.update(repeat_cfg, "repeats", None)
        repeat = to_config(repeat_cfg)
        repeat_overrides = [o for o in overrides if not o.lstrip("+~").startswith("repeats=")] + [f"data.seed={seed}"]
        mode = sweep_job_mode(folder, repeat)
        log.info("repeat data.seed=%d of %s -> %s", seed, list(config.repeats), _shown(folder))
        if mode == "keep":
            values.append(read_job(folder).best_value)
            continue
        labels = job_labels(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, repeat_overrides) if in_sweep else None
        metrics = train(
            repeat,
            folder,
            resume=mode == "resume",
            dist=dist,
            retry_failed=mode == "retry",
            record=None if mode == "resume" else record_for(repeat_cfg, repeat_overrides),
            labels=labels,
        )
        values.append(metrics[metric])
    interval = t_interval(values)
    if dist.is_main:
        write_json(
            run_dir / "repeats.json",
            {"metric": metric, "seeds": list(config.repeats), "values": values, **interval.as_dict()},
        )
    log.info(
        "repeats: %s mean %.4f%s over data.seed=%s",
        metric,
        interval.mean,
        f" (95% CI {interval.ci95[0]:.4f}-{interval.ci95[1]:.4f})" if interval.ci95 else "",
        list(config.repeats),
    )
    return interval.mean


def _after_stop(run_dir: Path, in_sweep: bool, hydra_cfg, dist: Dist, script: str) -> str:
    """What a stopped run kept, and the command that goes on from there."""
    if in_sweep:
        sweep_dir = _shown(Path(hydra_cfg.sweep.dir))
        return f"sweep stopped; to continue it, run the same command with hydra.sweep.dir={sweep_dir}"
    if (run_dir / STATE_FILE).is_file():
        launcher = "torchrun ... " if dist.enabled else "python "
        return f"resume with:\n  {launcher}{script} resume={_shown(run_dir)}"
    return (
        f"no training state was saved yet, so nothing to resume: {_shown(run_dir)} keeps what was written so far "
        "(the preprocessed data and the feature cache hold only complete files); run the command again"
    )


def sweep_job_mode(run_dir: Path, config: Config) -> str:
    """What a sweep job does with its folder: ``new``, ``resume`` (stopped), ``keep`` (finished) or
    ``retry`` (failed) -- the last three only when the stored resolved config equals ``config``."""
    held = contents(run_dir)
    if not held:
        return "new"
    if CONFIG_DIR not in held:
        raise RunFolderRefused(
            f"{run_dir}: holds files but no .hydra/ record, so it is no job of a sweep; choose another hydra.sweep.dir"
        )
    differences = config_differences(stored_config(run_dir), config)
    if differences:
        raise RunFolderRefused(
            f"job {run_dir} was run with another config ({'; '.join(differences[:5])}); its "
            "results belong to that config: choose another hydra.sweep.dir or leave it unset"
        )
    if (run_dir / STATE_FILE).is_file():
        return "resume"
    return "keep" if (run_dir / METRICS_FILE).is_file() else "retry"


def _shown(path: Path) -> str:
    """A folder as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
