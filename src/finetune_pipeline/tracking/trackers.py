"""The trackers of one run, fed from the run's own records; none of them can stop or slow training.

The run folder stays the record of truth (``train.log``, ``metrics.jsonl``, ``metrics.json``); a
tracker mirrors it. The trackers run in a helper process (``tracking/helper.py``, one per training
process, kept for every run of a sweep), at a lower CPU priority: importing MLflow costs ~2 s of CPU,
and sending it a step costs milliseconds that training never waits for. Training only writes calls
to the helper's pipe; ``finish`` waits until the helper has closed the run. Any tracker error -- the
package missing, a server that cannot be reached, a locked SQLite store -- is one warning (in
``train.log`` and on the console), and that tracker is dropped for the rest of the run; the run goes
on and its folder is complete. ``tracking.json`` in the run folder holds each tracker's run id (so
``resume=`` continues the same tracked run) and what became of it.

The helper imports a tracker's library only when its logger is chosen: ``logger=none`` starts no
helper and imports none.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from finetune_pipeline.artifacts.atomic import text_lines
from finetune_pipeline.artifacts.names import STEP_LOG_FILE
from finetune_pipeline.config.load import training_path
from finetune_pipeline.config.schema import Config, LoggerConfig, TrainingPath
from finetune_pipeline.data.source import dataset_name
from finetune_pipeline.paths import project_root

log = logging.getLogger(__name__)

MODULES = {"mlflow": "mlflow_tracker", "tensorboard": "tensorboard_tracker", "wandb": "wandb_tracker"}


@dataclass(frozen=True)
class RunLabels:
    """How trackers name and group a run."""

    name: str  # the run folder under outputs/, or "<job>: <swept values>" for a sweep job
    tags: dict[str, str] = field(default_factory=dict)  # sweep job number and overrides
    sweep_dir: str | None = None  # a sweep job: the sweep folder, whose tracking.json holds the parent run


def run_name(run_dir: Path) -> str:
    """A run's folder under the project's outputs/ (e.g. 2026-11-26/15-20-21-123456)."""
    outputs = project_root() / "outputs"
    try:
        return str(run_dir.resolve().relative_to(outputs.resolve()))
    except ValueError:
        return run_dir.name


def single_run_name(cfg: Config, run_dir: Path) -> str:
    """How trackers name a single run by default: what tells it from the others, then its folder --
    ``mmBERT-base · ag_news · full · 2026-11-26/15-20-21-123456`` (backbone, dataset, what trains)."""
    path = training_path(cfg)
    trains = {
        TrainingPath.full: "full",
        TrainingPath.lora: f"lora r{cfg.adapter.lora.rank}" if cfg.adapter.lora else "lora",
        TrainingPath.top_layers: f"top{cfg.adapter.top_layers.layers}" if cfg.adapter.top_layers else "top layers",
    }.get(path, "frozen")
    return " · ".join((cfg.backbone.name, dataset_name(cfg.data), trains, run_name(run_dir)))


class Tracker(Protocol):
    """What each tracker module's ``TRACKER`` class does (in the helper process)."""

    def start(
        self, run_dir: Path, labels: RunLabels, stored: dict, parent: dict
    ) -> dict: ...  # -> ids for tracking.json
    def log_params(self, params: dict[str, object]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, run_dir: Path, names: list[str]) -> None: ...
    def finish(self, status: str, message: str | None) -> None: ...  # status: finished | failed | diverged | stopped


def typed_logger(node) -> LoggerConfig:
    """A ``logger`` node (a DictConfig of a sweep's base config, or the JSON the helper receives) as typed config."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LoggerConfig), node or {}))


def chosen(cfg: LoggerConfig) -> dict[str, object]:
    """``{"mlflow": MlflowConfig, ...}`` for each logger the config turns on."""
    return {name: getattr(cfg, name) for name in MODULES if getattr(cfg, name) is not None}


class Trackers:
    """The trackers of one run, as seen from training: every call is queued to the helper process."""

    def __init__(self, run_dir: Path | None = None, cfg: LoggerConfig | None = None):
        self.run_dir = run_dir
        self.cfg = cfg if cfg is not None and chosen(cfg) else None
        self.key = uuid.uuid4().hex
        self._logged = _Watermark()
        self._helper: Helper | None = None

    def start(self, labels: RunLabels, resume: bool) -> None:
        """Open (or, resuming, continue) this run in every chosen tracker."""
        if self.cfg is None:
            return
        if resume:
            self._logged = _Watermark.of(self.run_dir / STEP_LOG_FILE)  # rows already sent before the stop
        self._helper = Helper.shared()
        self._send(
            "open", run_dir=str(self.run_dir), logger=plain(self.cfg), labels=dataclasses.asdict(labels), resume=resume
        )

    def log_params(self, params: dict[str, object]) -> None:
        self._send("call", method="log_params", args=[{k: plain(v) for k, v in params.items()}])

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send("call", method="set_tags", args=[tags])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._send("call", method="log_metrics", args=[metrics, step])

    def log_results(self, metrics: dict[str, float], step: int) -> None:
        """The run's one-point results (``test/accuracy`` -> ``test_accuracy``), see ``result_names``."""
        self.log_metrics(result_names(metrics), step)

    def log_row(self, row: dict) -> None:
        """One line of ``metrics.jsonl`` (a logged step or an epoch), unless a resumed run sent it before."""
        if self._helper is not None and self._logged.is_new(row):
            self.log_metrics(*metrics_of_row(row))

    def log_artifacts(self, names: list[str]) -> None:
        self._send("call", method="log_artifacts", args=[names])

    def log_dataset(self, name: str, source: str, digest: str, profile: dict[str, int]) -> None:
        """The data the run trained on, as the tracker's dataset input (MLflow's Dataset column)."""
        self._send("call", method="log_dataset", args=[name, source, digest, profile])

    def finish(self, status: str, message: str | None = None) -> None:
        """Close every tracker's run with ``status``; returns once the helper has done so."""
        if self._helper is None:
            return
        self._send("close", status=status, message=message)
        if self._helper is not None:
            self._helper.wait(self.key)
        self._helper = None

    def _send(self, op: str, **fields) -> None:
        if self._helper is not None and not self._helper.send({"op": op, "key": self.key, **fields}):
            self._helper = None  # the helper is gone; it said why on the console


class Helper:
    """The tracker helper process of this process (started on first use, ended at exit)."""

    _shared: Helper | None = None

    @classmethod
    def shared(cls) -> Helper:
        if cls._shared is None or cls._shared.proc.poll() is not None:
            cls._shared = cls()
        return cls._shared

    def __init__(self):
        # its own session: Ctrl-C in the terminal stops training, which then closes the runs through it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finetune_pipeline.tracking.helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._broken = False
        atexit.register(self.close)

    def send(self, message: dict) -> bool:
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps(message) + "\n")
                return True
            except (OSError, ValueError) as e:  # the helper died: report once, train on
                if not self._broken:
                    log.warning("trackers: the helper process ended (%s); training goes on without trackers", e)
                self._broken = True
                return False

    def wait(self, key: str) -> None:
        """Until the helper says the run ``key`` is closed (or ends)."""
        for line in self.proc.stdout:
            if json.loads(line).get("done") == key:
                return

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()


def plain(value: object) -> object:
    """A config value or dataclass as JSON (enums by their value)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return getattr(value, "value", value)


def result_names(metrics: dict[str, float]) -> dict[str, float]:
    """One-point results under flat names. MLflow and W&B chart a name with a ``/`` in a section
    named by its prefix and flat names in the last section, so the curves (``train/*``, ``val/*``,
    ``lr/*``) come first and the results (``test_accuracy``, ``best_val_macro_f1``) after them;
    a flat name also needs no quoting in MLflow's search (``metrics.test_accuracy > 0.9``)."""
    return {key.replace("/", "_"): value for key, value in metrics.items()}


def metrics_of_row(row: dict) -> tuple[dict[str, float], int]:
    """A ``metrics.jsonl`` row as tracker metrics and their step (optimizer steps so far)."""
    if row["kind"] == "step":
        metrics = {
            "train/loss_step": row["loss"],
            "train/texts_per_second_step": row["texts_per_second"],
            **{f"lr/{group}": lr for group, lr in row["lr"].items()},
        }
    else:
        # epoch and epoch_seconds are curves too: under train/, beside the other curves
        metrics = {
            k if "/" in k else f"train/{k}": v
            for k, v in row.items()
            if k not in ("kind", "opt_steps") and _is_number(v)
        }
    return metrics, int(row["opt_steps"])


class _Watermark:
    """The last step and epoch a run had logged before it stopped; a resumed run redoes the steps
    after its last saved state (bit-exactly) and must not send them twice."""

    def __init__(self, step: int = -1, epoch: int = 0):
        self.step, self.epoch = step, epoch

    @classmethod
    def of(cls, path: Path) -> _Watermark:
        step, epoch = -1, 0
        try:
            lines = text_lines(path.read_text(encoding="utf-8"))
        except OSError:
            lines = []
        for line in lines:
            try:
                row = json.loads(line)
                if row.get("kind") == "step":
                    step = max(step, int(row["opt_steps"]))
                elif row.get("kind") == "epoch":
                    epoch = max(epoch, int(row["epoch"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut by the stop
        return cls(step, epoch)

    def is_new(self, row: dict) -> bool:
        if row["kind"] == "step":
            return row["opt_steps"] > self.step
        return row["epoch"] > self.epoch


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(error: BaseException, limit: int = 300) -> str:
    """A library's exception as one line of at most ``limit`` characters, with its type."""
    if isinstance(error, ImportError) and error.name:
        return f'the {error.name} package is not installed (pip install -e ".[tracking]")'
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return (
        line if len(line) <= limit else f"{line[: limit * 2 // 3]} ... {line[-limit // 3 :]}"
    )  # the cause is at the end
