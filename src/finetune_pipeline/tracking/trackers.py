"""The trackers of one run, fed from the run's own records; none of them can stop training.

The run folder stays the record of truth (``train.log``, ``metrics.jsonl``, ``metrics.json``); a
tracker mirrors it, from a worker thread, so training never waits for it. Any tracker error -- the package missing, a server that cannot be reached, a
locked SQLite store -- is one warning, and that tracker is dropped for the rest of the run; the run
goes on and its folder is complete. ``tracking.json`` in the run folder holds each tracker's run id
(so ``resume=`` continues the same tracked run) and what became of it.

Each tracker module is imported only when its logger is chosen: ``logger=none`` imports none.
"""

from __future__ import annotations

import importlib
import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.config.schema import LoggerConfig

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"
MODULES = {"mlflow": "mlflow_tracker", "tensorboard": "tensorboard_tracker", "wandb": "wandb_tracker"}


@dataclass(frozen=True)
class RunLabels:
    """How trackers name and group a run."""
    name: str  # the run folder under outputs/, or "<job>: <overrides>" for a sweep job
    tags: dict[str, str] = field(default_factory=dict)  # sweep job number and overrides
    parent: dict = field(default_factory=dict)  # the sweep's parent run in each tracker (its tracking.json)


class Tracker(Protocol):
    def start(self, run_dir: Path, labels: RunLabels, stored: dict) -> dict: ...  # -> ids for tracking.json
    def log_params(self, params: dict[str, object]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, run_dir: Path, names: list[str]) -> None: ...
    def finish(self, status: str, message: str | None) -> None: ...  # status: finished | failed | diverged | stopped


def tracker_class(name: str):
    return getattr(importlib.import_module(f"finetune_pipeline.tracking.{MODULES[name]}"), "TRACKER")


def chosen(cfg: LoggerConfig) -> dict[str, object]:
    """``{"mlflow": MlflowConfig, ...}`` for each logger the config turns on."""
    return {name: getattr(cfg, name) for name in MODULES if getattr(cfg, name) is not None}


class Trackers:
    """Every chosen tracker, run on a worker thread behind one guard.

    Training only queues calls (it never waits for a tracker, nor for an unreachable server's
    timeout); ``finish`` waits until the queue is done. The first error of a tracker is one warning
    and drops that tracker for the rest of the run.
    """

    def __init__(self, run_dir: Path | None = None, cfg: LoggerConfig | None = None):
        self.run_dir = run_dir
        self._chosen = chosen(cfg) if cfg is not None else {}
        self._live: dict[str, Tracker] = {}  # touched by the worker only
        self._record: dict[str, dict] = {}  # tracking.json, written by the worker
        self._logged = _Watermark()
        self._queue: queue.SimpleQueue | None = None
        self._worker: threading.Thread | None = None

    def start(self, labels: RunLabels, resume: bool) -> None:
        """Open (or, resuming, continue) this run in every chosen tracker; writes ``tracking.json``."""
        if not self._chosen:
            return
        stored = read_memo(self.run_dir / TRACKING_FILE) if resume else {}
        if resume:
            self._logged = _Watermark.of(self.run_dir / "metrics.jsonl")  # rows already sent before the stop
        self._queue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="trackers", daemon=True)
        self._worker.start()
        self._submit(self._open, labels, stored)

    def log_params(self, params: dict[str, object]) -> None:
        self._submit(self._each, "log_params", params)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._submit(self._each, "set_tags", tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._submit(self._each, "log_metrics", metrics, step)

    def log_row(self, row: dict) -> None:
        """One line of ``metrics.jsonl`` (a logged step or an epoch), unless a resumed run sent it before."""
        if self._queue is not None and self._logged.is_new(row):
            self.log_metrics(*metrics_of_row(row))

    def log_artifacts(self, names: list[str]) -> None:
        self._submit(self._each, "log_artifacts", self.run_dir, names)

    def finish(self, status: str, message: str | None = None) -> None:
        """Close every tracker's run with ``status`` and wait for the queued calls to be done."""
        if self._queue is None:
            return
        self._submit(self._close, status, message)
        self._queue.put(None)
        self._worker.join()
        self._queue = self._worker = None

    def _submit(self, call, *args) -> None:
        if self._queue is not None:
            self._queue.put((call, args))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            call, args = item
            try:
                call(*args)
            except Exception as e:  # noqa: BLE001 -- the worker must keep serving until finish
                log.warning("trackers: %s", describe(e))

    def _open(self, labels: RunLabels, stored: dict) -> None:
        for name, cfg in self._chosen.items():
            self._record[name] = {}
            try:
                tracker = tracker_class(name)(cfg)
                self._record[name] = tracker.start(self.run_dir, labels, stored.get(name) or {})
                self._live[name] = tracker
            except Exception as e:  # noqa: BLE001 -- whatever a tracker raises, training goes on
                self._give_up(name, describe(e))
        self._write_record()

    def _close(self, status: str, message: str | None) -> None:
        for name in self._live:
            self._record[name]["status"] = status
        self._each("finish", status, message)
        self._live = {}
        self._write_record()

    def _each(self, method: str, *args) -> None:
        if method == "log_artifacts":  # only what the run wrote (a failed run has no reports)
            args = (args[0], [n for n in args[1] if (args[0] / n).exists()])
        for name, tracker in list(self._live.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001
                self._give_up(name, describe(e))

    def _give_up(self, name: str, reason: str) -> None:
        log.warning("logger %s: %s; training goes on without it (the run folder keeps every record)", name, reason)
        self._live.pop(name, None)
        self._record.setdefault(name, {})["error"] = reason

    def _write_record(self) -> None:
        try:
            write_json(self.run_dir / TRACKING_FILE, self._record)
        except Exception as e:  # noqa: BLE001 -- a full disk is reported where the artifacts are written
            log.warning("%s", e)


def metrics_of_row(row: dict) -> tuple[dict[str, float], int]:
    """A ``metrics.jsonl`` row as tracker metrics and their step (optimizer steps so far)."""
    if row["kind"] == "step":
        metrics = {"train/loss_step": row["loss"], "train/texts_per_second_step": row["texts_per_second"],
                   **{f"lr/{group}": lr for group, lr in row["lr"].items()}}
    else:
        metrics = {k: v for k, v in row.items() if k not in ("kind", "opt_steps") and _is_number(v)}
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
            lines = path.read_text(encoding="utf-8").splitlines()
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
        return f"the {error.name} package is not installed (pip install -e \".[tracking]\")"
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return line if len(line) <= limit else f"{line[:limit * 2 // 3]} ... {line[-limit // 3:]}"  # the cause is at the end
