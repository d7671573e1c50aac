"""The tracker helper process: ``python -m finetune_pipeline.tracking.helper`` (started by ``Trackers``).

Reads JSON lines from stdin -- ``open``, ``call``, ``close`` for a run (``key``), ``close_sweep`` for
a sweep's parent run -- and runs them against the chosen trackers, one run after another, each
behind one guard: the first error of a tracker is one warning (console and the run's train.log) and
drops that tracker for the rest of the run. Answers ``{"done": key}`` on stdout when a run is
closed. ``preload`` imports the chosen trackers' libraries ahead of a sweep's first job. Runs at a
lower CPU priority than training; ends when stdin closes (its training process ended), closing any
run left open as failed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import queue
import signal
import sys
import threading
from pathlib import Path

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.artifacts.names import TRACKING_FILE, TRAIN_LOG_FILE
from finetune_pipeline.config.schema import LoggerConfig
from finetune_pipeline.runtime.logs import formatter
from finetune_pipeline.tracking.sweep_runs import close_parent, ensure_parent
from finetune_pipeline.tracking.trackers import MODULES, RunLabels, chosen, describe, typed_logger

log = logging.getLogger("finetune_pipeline.tracking")


class RunTrackers:
    """The chosen trackers of one run, each dropped at its first error."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.live: dict[str, object] = {}
        self.dropped: dict[str, object] = {}  # trackers given up on mid-run: their tracked run is closed at the end
        self.record: dict[str, dict] = {}
        self.log_file = logging.FileHandler(run_dir / TRAIN_LOG_FILE, encoding="utf-8")  # appends, as training does
        self.log_file.setFormatter(formatter())
        log.addHandler(self.log_file)

    def open(self, labels: RunLabels, resume: bool) -> None:
        stored = read_memo(self.run_dir / TRACKING_FILE) if resume else {}
        for name, cfg in chosen(self.cfg).items():
            self.record[name] = {}
            try:
                parent = ensure_parent(name, cfg, Path(labels.sweep_dir)) if labels.sweep_dir else {}
                tracker = tracker_class(name)(cfg)
                self.record[name] = tracker.start(self.run_dir, labels, stored.get(name) or {}, parent)
                self.live[name] = tracker
            except Exception as e:
                self.give_up(name, describe(e))
        self.write_record()

    def call(self, method: str, args: list) -> None:
        if method == "log_artifacts":  # only what the run wrote (a failed run has no reports)
            args = [self.run_dir, [n for n in args[0] if (self.run_dir / n).exists()]]
        for name, tracker in list(self.live.items()):
            if not hasattr(tracker, method):  # a capability only some trackers have (log_dataset: MLflow's)
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as e:
                self.give_up(name, describe(e))

    def close(self, status: str, message: str | None) -> None:
        for name in self.live:
            self.record[name]["status"] = status
        self.call("finish", [status, message])
        self.live = {}
        for name, tracker in self.dropped.items():  # e.g. a store locked mid-run and free again: not left RUNNING
            try:
                tracker.finish("failed", f"tracking stopped mid-run: {self.record[name]['error']}")
                self.record[name]["status"] = "failed"
            except Exception as e:
                log.warning(
                    "logger %s: the tracked run could not be closed either (%s); it may show as running",
                    name,
                    describe(e),
                )
        self.dropped = {}
        self.write_record()
        log.removeHandler(self.log_file)
        self.log_file.close()

    def give_up(self, name: str, reason: str) -> None:
        log.warning(
            "logger %s: %s; training goes on without it (the run folder keeps every record; the tracked run "
            "is closed as failed at the end)",
            name,
            reason,
        )
        tracker = self.live.pop(name, None)
        if tracker is not None:
            self.dropped[name] = tracker
        self.record.setdefault(name, {})["error"] = reason

    def write_record(self) -> None:
        try:
            write_json(self.run_dir / TRACKING_FILE, self.record)
        except Exception as e:
            log.warning("%s", e)


def tracker_class(name: str):
    return importlib.import_module(f"finetune_pipeline.tracking.{MODULES[name]}").TRACKER


def serve(messages: queue.SimpleQueue, reply) -> None:
    runs: dict[str, RunTrackers] = {}
    while (message := messages.get()) is not None:
        op, key = message["op"], message.get("key")
        try:
            if op == "open":
                runs[key] = RunTrackers(Path(message["run_dir"]), typed_logger(message["logger"]))
                runs[key].open(RunLabels(**message["labels"]), message["resume"])
            elif op == "call" and key in runs:
                runs[key].call(message["method"], message["args"])
            elif op == "close" and key in runs:
                runs.pop(key).close(message["status"], message["message"])
            elif op == "preload":  # a sweep starts: import the libraries (and open a store) before job 0 needs them
                for name, cfg in chosen(typed_logger(message["logger"])).items():
                    tracker_class(name)(cfg)
            elif op == "close_sweep":
                close_parent(typed_logger(message["logger"]), Path(message["sweep_dir"]), message["failed"])
        except Exception as e:
            log.warning("trackers: %s", describe(e))
        if op in ("close", "close_sweep"):
            reply.write(json.dumps({"done": key}) + "\n")
            reply.flush()
    for run in runs.values():  # the training process ended without closing them
        run.close("failed", "the training process ended before the run was closed")


def main() -> None:
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")  # answers only: libraries that print go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for signum in (signal.SIGINT, signal.SIGTERM):  # training handles stops and then closes its runs here;
        signal.signal(signum, signal.SIG_IGN)  # the helper ends when training's end closes the pipe
    with contextlib.suppress(OSError):
        os.nice(10)  # training first: the helper uses what CPU it leaves
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter())
    log.addHandler(console)
    log.setLevel(logging.INFO)
    log.propagate = False
    messages: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:  # drains the pipe at once, so training never blocks on a write
        for line in sys.stdin:
            messages.put(json.loads(line))
        messages.put(None)

    threading.Thread(target=read, daemon=True).start()
    serve(messages, reply)
    reply.close()
    sys.stderr.flush()
    os._exit(0)  # every run is closed and written; skip the libraries' exit hooks (~1.4 s for MLflow)


if __name__ == "__main__":
    main()
