"""``finetune-pipeline serve RUN_OR_EXPORT``: load the classifier once, then serve it with uvicorn.

RUN_OR_EXPORT is a run folder (``best_model.pt``; ``--engine torch|onnxruntime``), an ONNX export
folder (``model.onnx``: onnxruntime) or a Hugging Face folder (``model.safetensors``: torch). SIGTERM
or Ctrl-C: stop taking connections, answer the requests in flight, exit 0.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def load(path: Path, engine: str, device: str, precision: str, batch_size: int):
    """The classifier behind the server, and the engine it runs on."""
    from finetune_pipeline.inference.predictor import Classifier

    if (path / "model.onnx").is_file():
        return Classifier.from_onnx_export(path, batch_size), "onnxruntime"
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        if engine != "torch":
            raise PipelineError(f"{path}: a Hugging Face folder runs on the torch engine; export the run with "
                                "--format onnx for onnxruntime")
        return Classifier.from_pretrained(path, device, precision, batch_size), "torch"
    if (path / "best_model.pt").is_file():
        return Classifier.from_run(path, device=device, precision=precision, batch_size=batch_size, engine=engine), engine
    raise PipelineError(f"{path}: neither a run folder (best_model.pt), an ONNX export (model.onnx) nor a "
                        "Hugging Face folder (model.safetensors)")


def serve(path: Path, host: str, port: int, engine: str = "torch", device: str = "auto", precision: str = "auto",
          max_batch_size: int = 64, max_wait_ms: float = 5.0, max_texts: int = 256, max_body_bytes: int = 1 << 20) -> None:
    import uvicorn

    from finetune_pipeline.serving.app import create_app

    clf, engine = load(path, engine, device, precision, max_batch_size)
    app = create_app(clf, engine, max_batch_size, max_wait_ms, max_texts, max_body_bytes)
    log.info("serving %s (%s) on http://%s:%d  (POST /predict, GET /health, /labels, /docs)", path, engine, host, port)
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn drains on these, then raises them again:
        signal.signal(signum, lambda *_: None)       # once drained, a stop is a normal end (exit 0)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                  timeout_graceful_shutdown=None)).run()
    log.info("server stopped")
