"""Read run folders back: overrides, status, metrics. One ``Job`` per folder that holds ``.hydra/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from finetune_pipeline.artifacts.failure_record import FailureRecord
from finetune_pipeline.artifacts.metrics_record import RunMetrics
from finetune_pipeline.artifacts.names import CONFIG_DIR, METRICS_FILE
from finetune_pipeline.errors import PipelineError


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


def find_job_folders(paths: list[Path]) -> list[Path]:
    """Run folders given directly, or found (recursively) under sweep folders; each folder once."""
    folders: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise PipelineError(f"{path}: not a folder")
        found = (
            [path] if (path / CONFIG_DIR).is_dir() else sorted(p.parent for p in path.rglob(CONFIG_DIR) if p.is_dir())
        )
        if not found:
            raise PipelineError(f"{path}: no run folders (folders with .hydra/) inside")
        folders += found
    unique: dict[Path, Path] = {}
    for folder in folders:
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def read_job(folder: Path) -> Job:
    """The job's record; a corrupt one is a job with status ``corrupt`` (and the reason), not an error."""
    try:
        return _read_job(folder)
    except (PipelineError, OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        return Job(folder, {}, "corrupt", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _read_job(folder: Path) -> Job:
    overrides = _read_overrides(folder / CONFIG_DIR / "overrides.yaml")
    failure = FailureRecord.read(folder)
    if failure is not None:
        return Job(folder, overrides, failure.status, error=failure.error)
    if not (folder / METRICS_FILE).is_file():
        return Job(folder, overrides, "incomplete")
    m = RunMetrics.read(folder)
    job = Job(
        folder,
        overrides,
        "ok",
        best_metric=m.best.metric,
        best_value=m.best_value,
        best_epoch=m.best.epoch,
        test_accuracy=m.test_accuracy,
        test_macro_f1=m.test_macro_f1,
        seconds=m.total_seconds,
    )
    if m.diverged():
        job.status, job.error = "diverged", "non-finite or missing values in metrics.json"
    return job


def _read_overrides(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(items, list):
        raise ValueError(f"{path.name} is not a list of overrides")
    try:  # Hydra's own parser: ++key=value, ~key, quoted values and sweeps read as Hydra reads them
        parsed = OverridesParser.create().parse_overrides([str(item) for item in items])
    except Exception as e:  # hydra.errors.OverrideParseException
        raise ValueError(f"{path.name}: {str(e).splitlines()[0]}") from None
    return {o.key_or_group: o.input_line.split("=", 1)[1] for o in parsed if "=" in o.input_line}
