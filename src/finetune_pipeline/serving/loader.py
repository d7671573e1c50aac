"""What a served folder is and the classifier it holds: a run folder (``best_model.pt``; torch or
onnxruntime), an ONNX export (``model.onnx``) or a Hugging Face folder (``model.safetensors``).
The server checks the folder with ``engine_for`` before it starts; each inference process loads."""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.errors import PipelineError


def folder_kind(path: Path) -> str:
    """What RUN_OR_EXPORT is: "onnx" (an ONNX export), "hf" (a Hugging Face folder) or "run"."""
    if (path / "model.onnx").is_file():
        return "onnx"
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        return "hf"
    if (path / BEST_MODEL_FILE).is_file():
        return "run"
    raise PipelineError(
        f"{path}: neither a run folder (best_model.pt), an ONNX export (model.onnx) nor a "
        "Hugging Face folder (model.safetensors)"
    )


def engine_for(path: Path, engine: str) -> str:
    """The engine that serves this folder, checked before any model loads."""
    kind = folder_kind(path)
    if kind == "onnx":
        from finetune_pipeline.inference.onnx_graph import int8_graph

        if engine == "onnxruntime-int8" and int8_graph(path) is None:
            raise PipelineError(f"{path}: no int8 graph (model_quantized.onnx); export the run with --quantize int8")
        return "onnxruntime-int8" if engine == "onnxruntime-int8" else "onnxruntime"
    if kind == "hf" and engine != "torch":
        raise PipelineError(
            f"{path}: a Hugging Face folder runs on the torch engine; export the run with --format onnx for onnxruntime"
        )
    return engine


def load(spec):
    """The classifier behind the server (loaded in each inference process) from a ``worker.EngineSpec``."""
    from finetune_pipeline.export.engines import Classifier

    engine, kind = engine_for(spec.path, spec.engine), folder_kind(spec.path)
    if kind == "onnx":
        return Classifier.from_onnx_export(spec.path, spec.batch_size, spec.threads, int8=engine == "onnxruntime-int8")
    if kind == "hf":
        return Classifier.from_pretrained(spec.path, spec.device, spec.precision, spec.batch_size)
    return Classifier.from_run(
        spec.path, spec.checkpoint, spec.backbone, spec.device, spec.precision, spec.batch_size, engine
    )
