"""A run folder as one ONNX graph: token ids + attention mask -> class probabilities.

    finetune-pipeline export RUN --format onnx [--quantize int8] [--out DIR]

The graph holds the encoder, the pooling and the head (a head-only checkpoint is put on its
encoder first), with dynamic batch and sequence axes; the folder ships it with the tokenizer and
the label maps. Before anything is written the graph is checked with onnxruntime against the
PyTorch model on the run's own test texts (``evaluation/test/predictions.jsonl``): the largest
absolute difference of any probability must be at most ``TOLERANCE``. ``--quantize int8`` adds
``model.int8.onnx`` (onnxruntime's dynamic quantization of the linear layers) and reports its test
accuracy beside fp32's. ``export.json`` holds these figures.

    <run>/export/onnx/ (default)
      model.onnx  [model.int8.onnx]  tokenizer/  id_to_label.json  label_to_id.json  export.json
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from finetune_pipeline.artifacts.atomic import atomic_dir, write_json
from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ONNX_DIR = Path("export") / "onnx"  # inside the run folder: also the onnxruntime engine's cache
MODEL, INT8_MODEL, REPORT = "model.onnx", "model.int8.onnx", "export.json"
TOLERANCE = 1e-4  # largest absolute probability difference against PyTorch (fp32)
OPSET = 18
INPUTS = ("input_ids", "attention_mask")


EXPORT_MARKERS = (REPORT, MODEL, "model.safetensors")  # what an export folder (onnx / hf) always holds


def check_out_dir(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    """Where an export may go: a new folder, or with ``overwrite`` an earlier export -- never the run
    folder, a folder holding it, one of its artifacts, a file or a folder that holds files but no export."""
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents:
        raise PipelineError(f"--out {out_dir}: is or holds the run folder {run_dir}; choose a new folder")
    if run in out.parents and (run / "export") not in (out, *out.parents):
        raise PipelineError(f"--out {out_dir}: inside the run folder only under {run_dir / 'export'}/")
    if not out.exists():
        return
    if not out.is_dir():
        raise PipelineError(f"--out {out_dir}: is a file; name a folder")
    if not any(out.iterdir()):  # an empty folder made for the export
        return
    if not overwrite:
        raise PipelineError(f"{out_dir}: an export is already there; pass --overwrite to replace it, or --out DIR")
    if not any((out / marker).is_file() for marker in EXPORT_MARKERS):
        raise PipelineError(f"--out {out_dir}: holds files but no export ({' or '.join(EXPORT_MARKERS)}); "
                            "--overwrite replaces only an earlier export")


def export_dir(checkpoint: str) -> Path:
    """Where a run keeps the export of ``checkpoint``: export/onnx (best_model.pt), export/onnx-final_model."""
    return ONNX_DIR if checkpoint == "best_model.pt" else ONNX_DIR.with_name(f"onnx-{Path(checkpoint).stem}")


class Probabilities(torch.nn.Module):
    """The run's classifier with the graph's signature: (input_ids, attention_mask) -> (B, C) probabilities."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask}).softmax(dim=-1)  # (B, C)


def export_onnx(run_dir: Path, out_dir: Path | None = None, checkpoint: str = "best_model.pt",
                quantize: str | None = None, overwrite: bool = False, backbone_path: Path | None = None) -> dict:
    """Export, verify on the run's test texts, then write ``out_dir`` whole. Returns the report."""
    from finetune_pipeline.inference.predictor import Classifier

    out_dir = out_dir or run_dir / export_dir(checkpoint)
    check_out_dir(out_dir, run_dir, overwrite)
    texts, y_true = test_texts(run_dir)
    clf = Classifier.from_run(run_dir, checkpoint, backbone_path, device="cpu", precision="fp32")
    if clf.chunking is not None:
        raise PipelineError(f"{run_dir}: trained with data.long_text=chunk ({clf.chunking.describe()}): the ONNX graph "
                            "classifies one window, not a document of pooled windows; use --format hf or the torch "
                            "engine")
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        graph(clf, tmp / MODEL)
        reference = clf.probabilities(texts, progress=False)  # PyTorch, fp32
        exported = OnnxModel(tmp / MODEL, clf.tokenizer.pad_token_id).probabilities_of(clf, texts)
        difference = float(np.abs(exported - reference).max())
        if not difference <= TOLERANCE:
            raise PipelineError(f"{run_dir}: the exported graph differs from the PyTorch model by {difference:.2e} "
                                f"(> {TOLERANCE:g}) on the test texts; nothing was written")
        report = {"source": checkpoint_source(run_dir, checkpoint), "opset": OPSET, "inputs": list(INPUTS),
                  "outputs": ["probabilities"], "test_texts": len(texts), "max_abs_probability_difference": difference,
                  "tolerance": TOLERANCE, "test_accuracy": {"pytorch": accuracy(reference, y_true),
                                                            "onnx_fp32": accuracy(exported, y_true)}}
        if quantize == "int8":
            quantize_int8(tmp / MODEL, tmp / INT8_MODEL)
            int8 = OnnxModel(tmp / INT8_MODEL, clf.tokenizer.pad_token_id).probabilities_of(clf, texts)
            report["test_accuracy"]["onnx_int8"] = accuracy(int8, y_true)
            report["int8_accuracy_change"] = report["test_accuracy"]["onnx_int8"] - report["test_accuracy"]["onnx_fp32"]
        clf.tokenizer.save_pretrained(tmp / "tokenizer")
        for name in ("id_to_label.json", "label_to_id.json"):
            shutil.copyfile(run_dir / name, tmp / name)
        report["seconds"] = time.perf_counter() - started
        write_json(tmp / REPORT, report)
    log.info("exported %s -> %s: max |p_onnx - p_torch| = %.2e on %d test texts%s", run_dir, out_dir, difference,
             len(texts), f"; int8 test accuracy {report['int8_accuracy_change']:+.4f} vs fp32" if quantize else "")
    return report


def checkpoint_source(run_dir: Path, checkpoint: str) -> dict:
    """What an export was made from: the run, the checkpoint's name, SHA-256 and (size, mtime) stamp."""
    from finetune_pipeline.backbone.identity import file_sha256

    path = run_dir / checkpoint
    stat = path.stat()
    return {"run": str(run_dir), "checkpoint": checkpoint, "checkpoint_sha256": file_sha256(path),
            "checkpoint_stat": [stat.st_size, stat.st_mtime_ns]}


def made_from(folder: Path, checkpoint: Path) -> bool:
    """Whether the export in ``folder`` was made from this very checkpoint file (a run resumed after
    its export has a new best_model.pt): the recorded stamp, else the recorded SHA-256."""
    from finetune_pipeline.backbone.identity import file_sha256

    try:
        source = json.loads((folder / REPORT).read_text(encoding="utf-8"))["source"]
        stat = checkpoint.stat()
        if source["checkpoint_stat"] == [stat.st_size, stat.st_mtime_ns]:
            return True
        return source["checkpoint_sha256"] == file_sha256(checkpoint)
    except (OSError, ValueError, KeyError, TypeError):  # no record, an old one, or a damaged one
        return False


def graph(clf, path: Path) -> None:
    """torch.onnx's TorchScript exporter: dynamic batch and sequence axes."""
    example = clf.tokenizer(["an example", "a second, longer example text"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "probabilities": {0: "batch"}}
    model = Probabilities(clf.model).eval()
    # the tracer warns where transformers branches on shapes; the graph is checked on real texts instead
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), str(path), dynamo=False,
                          input_names=list(INPUTS), output_names=["probabilities"], dynamic_axes=axes,
                          opset_version=OPSET)


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


class OnnxModel:
    """An exported graph run with onnxruntime on the CPU: batches of token ids -> probabilities."""

    def __init__(self, path: Path, pad_token_id: int, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # a truncated or foreign file
            raise PipelineError(f"{path}: not a readable ONNX graph ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if inputs != set(INPUTS) or "probabilities" not in outputs or len(outputs["probabilities"]) != 2:
            raise PipelineError(f"{path}: not a classifier graph of this tool (inputs {sorted(inputs)}, outputs "
                                f"{sorted(outputs)}; expected {list(INPUTS)} -> probabilities (batch, classes))")
        width = outputs["probabilities"][1]
        self.classes: int | None = width if isinstance(width, int) else None  # (B, C) output's C
        self.path, self.pad_token_id = path, pad_token_id

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """A batch of CPU tensors (the classifier's loader) -> (B, C) probabilities."""
        feed = {name: batch[name].numpy().astype(np.int64) for name in INPUTS}
        return self.session.run(["probabilities"], feed)[0]  # (B, C)

    def probabilities_of(self, clf, texts: list[str]) -> np.ndarray:
        """Through ``clf``'s own batching, with this graph as the model."""
        return clf.probabilities(texts, progress=False, model=self)


def test_texts(run_dir: Path) -> tuple[list[str], np.ndarray | None]:
    """The run's test texts and their true class ids (from evaluation/test/predictions.jsonl)."""
    from finetune_pipeline.inference.predictor import read_classes

    path = run_dir / "evaluation" / "test" / "predictions.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        symbols = {c["symbol"]: i for i, c in enumerate(read_classes(run_dir / "id_to_label.json"))}
        texts = [str(r["text"]) for r in rows]
        y_true = np.asarray([symbols[r["true_symbol"]] for r in rows])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path}: the run's test texts are needed to verify the export "
                            f"({type(e).__name__}: {e})") from None
    if not texts:
        raise PipelineError(f"{path}: no test texts to verify the export with")
    return texts, y_true


def accuracy(probs: np.ndarray, y_true: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == y_true).mean())
