"""``finetune-pipeline serve RUN_OR_EXPORT``: load the classifier once, then serve it with uvicorn.

RUN_OR_EXPORT is a run folder (``best_model.pt``; ``--engine torch|onnxruntime``), an ONNX export
folder (``model.onnx``: onnxruntime) or a Hugging Face folder (``model.safetensors``: torch). The
model runs in a child process (``worker.py``); this process serves HTTP. SIGTERM or Ctrl-C: stop
taking connections, answer the requests in flight, exit 0.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from pathlib import Path

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.serving.loader import engine_for, folder_kind

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before any model loads: a taken port or an unknown host fails in one
    line at once, not after minutes of loading. ``port`` 0 takes a free port (logged)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, OverflowError, UnicodeError) as e:
        raise PipelineError(
            f"--host {host!r}: not an address this machine can listen on ({getattr(e, 'strerror', None) or e})"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once after a stop
        sock.bind(address)
        sock.listen(2048)
    except (OSError, OverflowError) as e:
        sock.close()
        reason = (
            "the port is taken (another server?); pass another --port"
            if isinstance(e, OSError) and e.errno == errno.EADDRINUSE
            else (e.strerror or str(e))
        )
        raise PipelineError(f"--host {host} --port {port}: cannot listen there: {reason}") from None
    sock.set_inheritable(True)
    return sock


def start_engines(spec, workers: int) -> list:
    """``workers`` inference processes, loading the model side by side; none left running on failure."""
    from finetune_pipeline.serving.worker import EngineProcess

    processes: list[EngineProcess] = []
    try:
        for _ in range(workers):
            processes.append(EngineProcess(spec))
        for process in processes:
            process.wait_ready()
    except BaseException:
        for process in processes:
            process.close()
        raise
    return processes


def serve(
    path: Path,
    host: str,
    port: int,
    engine: str = "torch",
    device: str = "auto",
    precision: str = "auto",
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    limits=None,
    workers: int = 1,
    threads: int | None = None,
    checkpoint: str = BEST_MODEL_FILE,
    backbone: Path | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """``workers`` inference processes of ``threads`` intra-op threads each (default: the usable
    cores shared out); their batches run side by side. ``checkpoint`` and ``backbone``: of a run folder.
    ``limits``: what one request may cost (``app.Limits``). A stop signal while the model loads
    closes the inference processes and ends in one line; once serving, it drains the requests in
    flight for at most ``shutdown_timeout`` seconds."""
    import uvicorn

    from finetune_pipeline.runtime.signals import raise_on_signals
    from finetune_pipeline.serving.app import Limits, create_app
    from finetune_pipeline.serving.worker import EngineSpec

    engine, run_folder = engine_for(path, engine), folder_kind(path) == "run"
    source = path / checkpoint if run_folder else path
    if not run_folder and (checkpoint != BEST_MODEL_FILE or backbone is not None):
        raise PipelineError(
            f"{path}: an exported folder holds one model; --checkpoint and --backbone apply to a run folder"
        )
    if run_folder and not (path / checkpoint).is_file():
        raise PipelineError(f"{path}: not a finished run folder ({checkpoint} is missing)")
    if engine != "torch":
        from finetune_pipeline.export.engines import ensure_onnx_export
        from finetune_pipeline.inference.predictor import check_onnxruntime_options

        check_onnxruntime_options(device, precision)
    sock = listening_socket(host, port)
    try:
        with raise_on_signals():  # SIGTERM while loading: Stopped, the processes started so far are closed
            if engine != "torch" and run_folder:  # exported once, here, not by each process
                path = ensure_onnx_export(path, checkpoint, backbone, int8=engine == "onnxruntime-int8")
                checkpoint, backbone = BEST_MODEL_FILE, None
            threads = threads or max(1, len(os.sched_getaffinity(0)) // workers)
            spec = EngineSpec(path, engine, device, precision, max_batch_size, threads, checkpoint, backbone)
            processes = start_engines(spec, workers)
        try:
            app = create_app(processes, max_batch_size, max_wait_ms, limits or Limits())
            bound_host, bound_port = sock.getsockname()[:2]
            log.info(
                "serving %s (%s, %d inference process(es) x %d threads) on http://%s:%d  (POST /predict, GET "
                "/health, /labels, /docs)",
                source,
                engine,
                workers,
                threads,
                bound_host,
                bound_port,
            )
            for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn drains on these, then raises them again:
                signal.signal(signum, lambda *_: None)  # once drained, a stop is a normal end (exit 0)
            uvicorn.Server(
                uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=shutdown_timeout)
            ).run(sockets=[sock])
        finally:  # the app closes them after draining; here also when uvicorn could not start
            for process in processes:
                process.close()
    finally:
        sock.close()
    log.info("server stopped")
