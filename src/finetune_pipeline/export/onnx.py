"""A run folder as one ONNX graph: token ids + attention mask -> class probabilities.

    finetune-pipeline export RUN --format onnx [--quantize int8] [--out DIR]

The graph holds the encoder, the pooling and the head (a head-only checkpoint is put on its
encoder first), with dynamic batch and sequence axes: (input_ids, attention_mask) -> (logits,
probabilities). The folder has optimum's layout: the graph, ``config.json`` (the encoder's config
with id2label/label2id) and the tokenizer files at its root, so
``ORTModelForSequenceClassification.from_pretrained(folder)`` and its pipeline read it (the int8
graph with ``file_name="model_quantized.onnx"``). Before anything is written the graph is checked
with onnxruntime against the PyTorch model on the run's own test texts
(``evaluation/test/predictions.jsonl``): the largest absolute difference of any probability must be
at most ``TOLERANCE``. ``--quantize int8`` adds ``model_quantized.onnx`` (onnxruntime's dynamic
quantization of the linear layers) and reports its test accuracy beside fp32's. ``export.json``
holds these figures and the SHA-256 of every file.

    <run>/export/onnx/ (default)
      model.onnx  [model_quantized.onnx]  config.json  tokenizer files  id_to_label.json  label_to_id.json
      export.json

Folders exported by earlier versions (``tokenizer/``, ``model.int8.onnx``, a graph whose only
output is ``probabilities``) are still read.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from finetune_pipeline.artifacts.atomic import atomic_dir, write_json
from finetune_pipeline.artifacts.names import BEST_MODEL_FILE, ID_TO_LABEL_FILE, LABEL_TO_ID_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.export.local_paths import without_machine_paths
from finetune_pipeline.export.shared import check_out_dir, refuse_machine_paths, save_tokenizer, test_texts
from finetune_pipeline.inference.manifest import ExportRecord, checkpoint_source, write_manifest
from finetune_pipeline.inference.onnx_graph import INPUTS, INT8_MODEL, MODEL, OUTPUTS, OnnxModel

log = logging.getLogger(__name__)

ONNX_DIR = Path("export") / "onnx"  # inside the run folder: also the onnxruntime engine's cache
TOLERANCE = 1e-4  # largest absolute probability difference against PyTorch (fp32)
OPSET = 18


def export_dir(checkpoint: str) -> Path:
    """Where a run keeps the export of ``checkpoint``: export/onnx (best_model.pt), export/onnx-final_model."""
    return ONNX_DIR if checkpoint == BEST_MODEL_FILE else ONNX_DIR.with_name(f"onnx-{Path(checkpoint).stem}")


class LogitsAndProbabilities(torch.nn.Module):
    """The run's classifier with the graph's signature: (input_ids, attention_mask) -> (B, C) logits, probabilities."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model({"input_ids": input_ids, "attention_mask": attention_mask})  # (B, C)
        multi_label = self.model.config.multi_label  # a sigmoid per label (0.5: its tuned threshold)
        return logits, logits.sigmoid() if multi_label else logits.softmax(dim=-1)


def export_onnx(
    run_dir: Path,
    out_dir: Path | None = None,
    checkpoint: str = BEST_MODEL_FILE,
    quantize: str | None = None,
    overwrite: bool = False,
    backbone_path: Path | None = None,
) -> dict:
    """Export, verify on the run's test texts, then write ``out_dir`` whole. Returns the report."""
    from finetune_pipeline.inference.classes import read_classes
    from finetune_pipeline.inference.predictor import Classifier

    out_dir = out_dir or run_dir / export_dir(checkpoint)
    check_out_dir(out_dir, run_dir, overwrite)
    texts, y_true = test_texts(run_dir)
    clf = Classifier.from_run(run_dir, checkpoint, backbone_path, device="cpu", precision="fp32")
    if clf.chunking is not None:
        raise PipelineError(
            f"{run_dir}: trained with data.long_text=chunk ({clf.chunking.describe()}): the ONNX graph "
            "classifies one window, not a document of pooled windows; use --format hf or the torch "
            "engine"
        )
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        graph(clf, tmp / MODEL)
        reference = clf.probabilities(texts, progress=False)  # PyTorch, fp32
        exported = OnnxModel(tmp / MODEL, clf.tokenizer.pad_token_id).probabilities_of(clf, texts)
        difference = float(np.abs(exported - reference).max())
        if not difference <= TOLERANCE:
            raise PipelineError(
                f"{run_dir}: the exported graph differs from the PyTorch model by {difference:.2e} "
                f"(> {TOLERANCE:g}) on the test texts; nothing was written"
            )
        report = {
            "format": "onnx",
            "source": checkpoint_source(run_dir, checkpoint),
            "opset": OPSET,
            "inputs": list(INPUTS),
            "outputs": list(OUTPUTS),
            "test_texts": len(texts),
            "max_abs_probability_difference": difference,
            "tolerance": TOLERANCE,
            "test_accuracy": {"pytorch": accuracy(reference, y_true), "onnx_fp32": accuracy(exported, y_true)},
        }
        if quantize == "int8":
            quantize_int8(tmp / MODEL, tmp / INT8_MODEL)
            int8 = OnnxModel(tmp / INT8_MODEL, clf.tokenizer.pad_token_id).probabilities_of(clf, texts)
            report["test_accuracy"]["onnx_int8"] = accuracy(int8, y_true)
            report["int8_accuracy_change"] = report["test_accuracy"]["onnx_int8"] - report["test_accuracy"]["onnx_fp32"]
        save_tokenizer(clf.tokenizer, tmp)
        write_optimum_config(clf, read_classes(run_dir / ID_TO_LABEL_FILE), tmp)
        for name in (ID_TO_LABEL_FILE, LABEL_TO_ID_FILE):
            shutil.copyfile(run_dir / name, tmp / name)
        report["seconds"] = time.perf_counter() - started
        report = write_manifest(tmp, report)
        refuse_machine_paths(tmp, out_dir, run_dir, backbone_path)
    log.info(
        "exported %s -> %s: max |p_onnx - p_torch| = %.2e on %d test texts%s",
        run_dir,
        out_dir,
        difference,
        len(texts),
        f"; int8 test accuracy {report['int8_accuracy_change']:+.4f} vs fp32" if quantize else "",
    )
    return report


def write_optimum_config(clf, classes: list[dict], folder: Path) -> None:
    """config.json as optimum's ORTModelForSequenceClassification reads it: the encoder's config with
    the classes. The folder has no PyTorch weights, so transformers cannot mistake it for a model."""
    config = {k: v for k, v in clf.model.encoder.config.to_dict().items() if k not in ("_name_or_path", "auto_map")}
    config.update(
        id2label={str(i): c["label"] for i, c in enumerate(classes)},
        label2id={c["label"]: i for i, c in enumerate(classes)},
        problem_type="multi_label_classification" if clf.multi_label else "single_label_classification",
    )
    write_json(folder / "config.json", without_machine_paths(config))


def made_from(folder: Path, checkpoint: Path) -> bool:
    """Whether the export in ``folder`` was made from this very checkpoint file (a run resumed after
    its export has a new best_model.pt): the recorded stamp, else the recorded SHA-256."""
    from finetune_pipeline.backbone.identity import file_sha256

    try:
        source = ExportRecord.read(folder).source
        stat = checkpoint.stat()
    except (OSError, PipelineError):  # no record, or a damaged one
        return False
    if source is None:  # an early export
        return False
    if list(source.checkpoint_stat) == [stat.st_size, stat.st_mtime_ns]:
        return True
    return source.checkpoint_sha256 == file_sha256(checkpoint)


def graph(clf, path: Path) -> None:
    """torch.onnx's TorchScript exporter: dynamic batch and sequence axes."""
    example = clf.tokenizer(["an example", "a second, longer example text"], padding=True, return_tensors="pt")
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
        "probabilities": {0: "batch"},
    }
    model = LogitsAndProbabilities(clf.model).eval()
    # the tracer warns where transformers branches on shapes; the graph is checked on real texts instead
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            dynamo=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantization: int8 weights of the linear layers, activations quantized per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a line per tensor it leaves in float, on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def accuracy(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Accuracy of the top class; multi-label (``y_true`` (N, C)): subset accuracy at 0.5."""
    if y_true.ndim == 2:
        return float(((probs >= 0.5) == y_true.astype(bool)).all(axis=1).mean())
    return float((probs.argmax(axis=1) == y_true).mean())
