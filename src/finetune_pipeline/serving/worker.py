"""The classifier in a process of its own: the server's event loop and the model never share a GIL.

PyTorch runs a forward pass as hundreds of operations dispatched from Python, each taking the
GIL; in the server's process they queue behind the event loop's parsing and JSON work while the
cores idle (MiniLM, torch engine, 32 clients on 2 cores: 1.47 of 2 cores busy, 45% of offline
speed). Here the server sends each batch's texts over a pipe to a child process that loads the
classifier once, tokenizes and runs the batch, and sends the (N, C) probabilities back.

The child ignores SIGINT/SIGTERM (the server drains its requests, then closes the pipe), ends when
the pipe closes (the server is gone, even killed), and a child that dies is started again for the
next batch: the batch it was running fails, the server goes on.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """What the child loads (``serving.server.load``)."""

    path: Path
    engine: str  # torch | onnxruntime
    device: str
    precision: str
    batch_size: int
    threads: int  # intra-op threads of this process (torch and onnxruntime)
    checkpoint: str = BEST_MODEL_FILE  # of a run folder
    backbone: Path | None = None  # a run's encoder folder, if it moved since training


@dataclass(frozen=True)
class LoadedModel:
    """What the server needs to know of the model, sent by the child once it is loaded."""

    engine: str
    labels: list[str]
    symbols: list[str]
    pid: int
    multi_label: bool = False  # scores are per-label sigmoids; the answer is a set of labels


class EngineDied(RuntimeError):
    """The child process ended while running a batch."""


class EngineProcess:
    """``probabilities(texts)`` computed in a child process; one batch at a time. The process
    starts at construction; ``wait_ready()`` returns once it has loaded the model."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.lock = threading.Lock()
        self.model: LoadedModel | None = None
        self._spawn()

    def wait_ready(self) -> LoadedModel:
        if self.model is None:
            self.model = self._receive_loaded()
        return self.model

    def probabilities(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            if not self.process.is_alive():
                log.warning("starting the inference process again")
                self._spawn()
                self.model = self._receive_loaded()
            try:
                self.conn.send(texts)
                kind, value = self.conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                self.process.join(timeout=5)
                raise EngineDied(
                    f"the inference process ended (exit code {self.process.exitcode}) during a batch "
                    f"of {len(texts)} texts; it starts again with the next batch"
                ) from None
        if kind == "error":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        with self.lock:
            with contextlib.suppress(OSError):  # the process is gone already
                self.conn.send(None)
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.conn.close()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and a model
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve_batches, args=(child, self.spec), daemon=True, name="finetune-pipeline-inference"
        )
        self.process.start()
        child.close()

    def _receive_loaded(self) -> LoadedModel:
        try:
            kind, value = self.conn.recv()
        except EOFError:
            self.process.join()
            raise PipelineError(
                f"{self.spec.path}: the inference process ended while loading the model "
                f"(exit code {self.process.exitcode})"
            ) from None
        if kind == "error":
            self.process.join()
            raise PipelineError(value)
        log.info("inference process %d: %s engine, %d classes", value.pid, value.engine, len(value.labels))
        return value


def _serve_batches(conn, spec: EngineSpec) -> None:
    """The child's loop: load, say what was loaded, then texts in -> ("ok", probabilities) out."""
    import os

    import torch
    from transformers.utils import logging as hf_logging

    from finetune_pipeline.runtime.logs import log_to_stderr
    from finetune_pipeline.serving.loader import load

    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole process group:
        signal.signal(signum, signal.SIG_IGN)  # the server decides when this process ends
    log_to_stderr()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(spec.threads)
    try:
        clf = load(spec)
    except PipelineError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ready", LoadedModel(spec.engine, list(clf.labels), list(clf.symbols), os.getpid(), clf.multi_label)))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if texts is None:
            return
        try:
            conn.send(("ok", clf.probabilities(texts, progress=False)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
