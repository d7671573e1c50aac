"""Read run folders back: overrides, status, metrics. One ``Job`` per folder that holds ``.hydra/``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.errors import PipelineError

FAILURE_FILE = "failed.json"  # written by train.py when a sweep job fails


@dataclass
class Job:
    folder: Path
    overrides: dict[str, str]  # key -> value as given on the command line
    status: str  # ok | failed | incomplete
    error: str = ""
    best_metric: str = ""  # e.g. val/macro_f1
    best_value: float | None = None
    best_epoch: int | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    seconds: float | None = None  # the run's total time


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Mark a sweep job as failed, with its one-line error, for the sweep summary."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    logging.getLogger(__name__).error("job failed: %s", message)
    write_json(run_dir / FAILURE_FILE, {"error": message, "type": type(error).__name__})


def find_job_folders(paths: list[Path]) -> list[Path]:
    """Run folders given directly, or found (recursively) under sweep folders."""
    folders: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise PipelineError(f"{path}: not a folder")
        found = [path] if (path / ".hydra").is_dir() else sorted(p.parent for p in path.rglob(".hydra") if p.is_dir())
        if not found:
            raise PipelineError(f"{path}: no run folders (folders with .hydra/) inside")
        folders += found
    return folders


def read_job(folder: Path) -> Job:
    overrides = _read_overrides(folder / ".hydra" / "overrides.yaml")
    metrics_file, failure_file = folder / "metrics.json", folder / FAILURE_FILE
    if failure_file.is_file():
        return Job(folder, overrides, "failed", error=json.loads(failure_file.read_text(encoding="utf-8"))["error"])
    if not metrics_file.is_file():
        return Job(folder, overrides, "incomplete")
    m = json.loads(metrics_file.read_text(encoding="utf-8"))
    return Job(folder, overrides, "ok", best_metric=m["best"]["metric"], best_value=m["best"]["value"],
               best_epoch=m["best"]["epoch"], test_accuracy=m["test"]["test/accuracy"],
               test_macro_f1=m["test"]["test/macro_f1"], seconds=m["timings"]["total_seconds"])


def _read_overrides(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    pairs = (item.split("=", 1) for item in items if "=" in item)
    return {key.lstrip("+~"): value for key, value in pairs}
