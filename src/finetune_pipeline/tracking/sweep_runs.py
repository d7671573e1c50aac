"""A sweep in the trackers: one parent run, a child per job, the summary files on the parent.

``<sweep folder>/tracking.json`` holds what the sweep's jobs share: the swept keys (they name the
child runs), the sweep's overrides and, once the first job has created it, the parent run's ids.
The parent is created by the first job's tracker helper under a file lock, so jobs in this process,
in joblib workers or on SLURM nodes all find the same one; running the same sweep folder again (a
continued sweep, the next Optuna invocation of a study) continues it. When the sweep ends the
callback logs the summary files to it and closes it -- FAILED, naming the jobs, if any did not finish.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.artifacts.names import FAILURE_FILE, TRACKING_FILE
from finetune_pipeline.config.differences import flatten
from finetune_pipeline.config.schema import LoggerConfig
from finetune_pipeline.errors import error_line
from finetune_pipeline.tracking.trackers import (
    Helper,
    RunLabels,
    Trackers,
    chosen,
    plain,
    result_names,
    run_name,
    typed_logger,
)

SUMMARY_FILES = ["summary.json", "summary.md", "summary.csv", "summary.png", "multirun.yaml"]
LOCK = ".tracking.lock"


def logger_config(config: DictConfig) -> LoggerConfig:
    """The typed ``logger`` node of a sweep's base config."""
    return typed_logger(config.get("logger"))


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: its sweep overrides (a=1,2) and an Optuna search space."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [k for k in params if k not in keys]


def open_sweep(cfg: LoggerConfig, sweep_dir: Path, swept: list[str], overrides: list[str]) -> None:
    """Note what the jobs share; start this process's tracker helper loading the libraries."""
    if not chosen(cfg):
        return
    Helper.shared().send({"op": "preload", "logger": plain(cfg)})  # jobs in this process find MLflow imported
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sweep_dir / LOCK)):
        record = read_memo(sweep_dir / TRACKING_FILE)
        record.update(swept=swept, overrides=overrides, name=run_name(sweep_dir))
        write_json(sweep_dir / TRACKING_FILE, record)


def ensure_parent(tracker: str, cfg, sweep_dir: Path) -> dict:
    """The sweep's parent run in ``tracker`` (created by the first job that asks); in the helper process."""
    with FileLock(str(sweep_dir / LOCK)):
        record = read_memo(sweep_dir / TRACKING_FILE)
        name = record.get("name") or run_name(sweep_dir)
        if tracker == "wandb":
            return {"group": name}
        if tracker != "mlflow":
            return {}
        from finetune_pipeline.tracking.mlflow_tracker import open_parent

        labels = RunLabels(name, {"sweep": "parent", "sweep.overrides": " ".join(record.get("overrides") or [])})
        record["mlflow"] = open_parent(cfg, labels, sweep_dir, record.get("mlflow") or {})
        write_json(sweep_dir / TRACKING_FILE, record)
        return record["mlflow"]


def close_sweep(cfg: LoggerConfig, sweep_dir: Path, failed: list[str]) -> None:
    """When the sweep ends (in the launching process): through this process's tracker helper."""
    if cfg.mlflow is None or not read_memo(sweep_dir / TRACKING_FILE).get("mlflow"):
        return
    helper = Helper.shared()
    if helper.send(
        {"op": "close_sweep", "key": "sweep", "logger": plain(cfg), "sweep_dir": str(sweep_dir), "failed": failed}
    ):
        helper.wait("sweep")


def close_parent(cfg: LoggerConfig, sweep_dir: Path, failed: list[str]) -> None:
    """Summary files to the parent; FAILED when a job did not finish; in the helper process."""
    from finetune_pipeline.tracking.mlflow_tracker import close_parent as close_mlflow_parent

    message = f"{len(failed)} job(s) did not finish: {', '.join(failed)}" if failed else None
    close_mlflow_parent(
        cfg.mlflow,
        read_memo(sweep_dir / TRACKING_FILE)["mlflow"],
        "failed" if failed else "finished",
        message,
        sweep_dir,
        SUMMARY_FILES,
        *parent_figures(read_memo(sweep_dir / "summary.json")),
    )


def parent_figures(summary: dict) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of the parent run from summary.json: the best configuration's mean and 95%
    interval of every metric (``best_config_test_accuracy_mean``, …), and which configuration it is
    and how it was chosen, with the verdicts."""
    best = summary.get("best_config")
    if not best:
        return {}, {}
    config = next((c for c in summary.get("configs", []) if c["config"] == best["config"]), None)
    metrics = {}
    for name, m in (config or {}).get("metrics", {}).items():
        for part, value in (
            ("mean", m.get("mean")),
            ("ci95_low", (m.get("ci95") or [None, None])[0]),
            ("ci95_high", (m.get("ci95") or [None, None])[1]),
            ("std", m.get("std")),
        ):
            if isinstance(value, (int, float)):
                metrics[f"best_config/{name}/{part}"] = float(value)
    verdicts = [c["verdict"] for c in summary.get("comparisons", []) if c["metric"] == "test/accuracy"]
    tags = {
        "best_config": best["config"],
        "best_config.selected_by": best["selected_by"],
        "best_config.repeats": str((config or {}).get("n", "")),
        "verdicts.test_accuracy": ", ".join(f"{v}: {verdicts.count(v)}" for v in sorted(set(verdicts))),
    }
    return result_names(metrics), tags


def job_labels(sweep_dir: Path, job_num: int, overrides: list[str]) -> RunLabels:
    """A sweep job's name (its swept values), tags and sweep, as its trackers show it."""
    swept = set(read_memo(sweep_dir / TRACKING_FILE).get("swept") or ())
    varied = " ".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept) or " ".join(overrides)
    return RunLabels(
        name=f"{job_num}: {varied}" if varied else str(job_num),
        tags={"sweep.job": str(job_num), "sweep.overrides": " ".join(overrides), "sweep.dir": str(sweep_dir)},
        sweep_dir=str(sweep_dir),
    )


def track_failed_job(config: DictConfig, run_dir: Path, labels: RunLabels, error: BaseException) -> None:
    """A sweep job whose config was refused (it never reached training) still shows up, FAILED."""
    try:
        cfg = logger_config(config)
    except Exception:
        return
    trackers = Trackers(run_dir, cfg)
    trackers.start(labels, resume=False)
    trackers.log_params(flatten(OmegaConf.to_container(config, resolve=False)))
    trackers.log_artifacts([FAILURE_FILE])
    trackers.finish("failed", error_line(error))
