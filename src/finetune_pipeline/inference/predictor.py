"""Use a trained run: ``Classifier.from_run(run_dir).predict(texts)``.

    from finetune_pipeline import Classifier
    clf = Classifier.from_run("outputs/2026-11-26/12-00-00-000000")
    clf.predict(["Сборная России вышла в финал"], top_k=3)
    # [{"label": "Спорт", "symbol": "c", "score": 0.93, "top_k": [{"label", "symbol", "score"}, ...]}]
    # a multi-label run: [{"labels": ["Спорт"], "symbols": ["c"], "scores": {"Спорт": 0.93, ...}}]

Texts are tokenized as in training (the run's tokenizer/, saved with data.max_length as its
``model_max_length``), batched in length
order with dynamic padding and a token budget, run in bf16 where that is faster (precision
``auto``), and returned in input order. A head-only checkpoint (frozen runs) is put on the encoder
named in it, whose SHA-256 must match; a full checkpoint carries its own encoder.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE, ID_TO_LABEL_FILE, TOKENIZER_DIR
from finetune_pipeline.artifacts.run_folder import writer_of
from finetune_pipeline.backbone.load import read_tokenizer
from finetune_pipeline.config.schema import MixedPrecision
from finetune_pipeline.data.batches import TokenizedTexts, eval_loader
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.evaluation.multilabel import multilabel_rows
from finetune_pipeline.evaluation.report import prediction_rows
from finetune_pipeline.inference.classes import read_classes
from finetune_pipeline.inference.hf_folder import load_pretrained
from finetune_pipeline.inference.manifest import verify
from finetune_pipeline.inference.onnx_graph import MODEL, OnnxModel, int8_graph, tokenizer_folder
from finetune_pipeline.model.classifier import TextClassifier
from finetune_pipeline.model.loading import load_classifier
from finetune_pipeline.model.prepacked import prepare_for_inference
from finetune_pipeline.runtime.device import resolve_device
from finetune_pipeline.runtime.precision import Precision, resolve_precision

log = logging.getLogger(__name__)

PROGRESS_FROM = 1000  # texts; smaller inputs get no progress bar


class Classifier:
    """Texts -> class probabilities with one of two engines: the PyTorch model (``model``), or the
    run's exported ONNX graph run by onnxruntime (``graph``, CPU; see ``export/onnx.py``). A
    multi-label model gives each label's score (a sigmoid; 0.5 is the label's tuned threshold)."""

    def __init__(
        self,
        model: TextClassifier | None,
        tokenizer,
        symbols: list[str],
        labels: list[str],
        max_length: int,
        device: torch.device,
        precision: Precision,
        batch_size: int = 64,
        max_tokens: int = 8192,
        graph=None,
        multi_label: bool = False,
    ):
        self.model = prepare_for_inference(model.to(device).eval(), precision) if model is not None else None
        self.tokenizer, self.graph = tokenizer, graph
        self.symbols, self.labels, self.max_length = symbols, labels, max_length
        self.device, self.precision = device, precision
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.chunking = model.chunking if model is not None else None  # the ONNX graph is of truncated runs
        self.multi_label = model.config.multi_label if model is not None else multi_label

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        checkpoint: str = BEST_MODEL_FILE,
        backbone_path: str | Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
    ) -> Classifier:
        """Load a run folder's checkpoint (``best_model.pt`` or ``final_model.pt``), tokenizer and labels
        (the PyTorch engine; ``finetune_pipeline.Classifier.from_run`` also takes ``engine=``)."""
        warn_if_training(Path(run_dir), checkpoint)
        run = Path(run_dir)
        for needed in (checkpoint, ID_TO_LABEL_FILE, TOKENIZER_DIR):
            if not (run / needed).exists():
                raise PipelineError(f"{run}: not a finished run folder ({needed} is missing)")
        classes = read_classes(run / ID_TO_LABEL_FILE)
        model = load_classifier(
            run / checkpoint, Path(backbone_path) if backbone_path else None, classes, run / TOKENIZER_DIR
        )
        if model.head[-1].out_features != len(classes):
            raise PipelineError(
                f"{run / checkpoint}: {model.head[-1].out_features} classes, but id_to_label.json has {len(classes)}"
            )
        tokenizer = read_tokenizer(run / TOKENIZER_DIR)
        dev = resolve_device(device)
        prec = resolve_precision(MixedPrecision(precision), dev)
        log.info("loaded %s (%d classes) on %s, %s", run / checkpoint, len(classes), dev, prec.name)
        return cls(
            model,
            tokenizer,
            [c["symbol"] for c in classes],
            [c["label"] for c in classes],
            tokenizer.model_max_length,
            dev,
            prec,
            batch_size,
        )

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str = "auto", precision: str = "auto", batch_size: int = 64
    ) -> Classifier:
        """A folder written by ``finetune-pipeline export RUN --format hf`` (or downloaded from the Hub)."""
        folder = Path(folder)
        loaded = load_pretrained(folder)
        tokenizer = read_tokenizer(folder)
        dev = resolve_device(device)
        prec = resolve_precision(MixedPrecision(precision), dev)
        log.info("loaded %s (%d classes) on %s, %s", folder, len(loaded.labels), dev, prec.name)
        return cls(
            loaded.model, tokenizer, loaded.symbols, loaded.labels, tokenizer.model_max_length, dev, prec, batch_size
        )

    @classmethod
    def from_onnx_export(
        cls, folder: str | Path, batch_size: int = 64, threads: int | None = None, int8: bool = False
    ) -> Classifier:
        """An ONNX export folder on its own (no run folder, no backbone): graph, tokenizer, labels.
        ``int8``: its dynamically quantized graph (``export --quantize int8``)."""
        folder = Path(folder)
        for needed in (MODEL, ID_TO_LABEL_FILE):
            if not (folder / needed).exists():
                raise PipelineError(f"{folder}: not an ONNX export folder ({needed} is missing)")
        verify(folder)
        model_file = int8_graph(folder) if int8 else folder / MODEL
        if model_file is None:
            raise PipelineError(f"{folder}: no int8 graph (model_quantized.onnx); export the run with --quantize int8")
        classes = read_classes(folder / ID_TO_LABEL_FILE)
        tokenizer = read_tokenizer(tokenizer_folder(folder))
        graph = OnnxModel(model_file, tokenizer.pad_token_id, threads)
        if graph.classes is not None and graph.classes != len(classes):
            raise PipelineError(
                f"{folder / 'id_to_label.json'}: {len(classes)} classes, but {model_file} "
                f"gives {graph.classes}; the folder mixes two exports"
            )
        log.info("loaded %s (%d classes), onnxruntime on the CPU", model_file, len(classes))
        multi_label = read_problem_type(folder) == "multi_label_classification"
        return cls(
            None,
            tokenizer,
            [c["symbol"] for c in classes],
            [c["label"] for c in classes],
            tokenizer.model_max_length,
            torch.device("cpu"),
            resolve_precision(MixedPrecision.fp32, torch.device("cpu")),
            batch_size,
            graph=graph,
            multi_label=multi_label,
        )

    @torch.inference_mode()
    def probabilities(self, texts: list[str], progress: bool = True, model=None) -> np.ndarray:
        """(N, C) class probabilities, rows in the order of ``texts``. ``model``: a callable from a batch
        of CPU tensors to (B, C) probabilities, in place of this classifier's engine."""
        model = model or self.graph
        data = TokenizedTexts(list(texts), [0] * len(texts), self.tokenizer, self.max_length, self.chunking)
        loader = eval_loader(data, self.batch_size, 0, self.tokenizer.pad_token_id, self.max_tokens)
        probs = np.zeros((len(texts), len(self.symbols)), dtype=np.float32)
        show = progress and len(texts) >= PROGRESS_FROM and sys.stderr.isatty()
        with tqdm(total=len(texts), unit="text", desc="predict", disable=not show) as bar:
            for batch in loader:
                index = batch.pop("index")
                if model is not None:
                    probs[index.numpy()] = model(batch)
                else:
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    with self.precision.autocast():
                        logits = self.model(batch)  # (B, C)
                    logits = logits.float()
                    scores = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
                    probs[index.numpy()] = scores.cpu().numpy()
                bar.update(len(index))
        return probs

    def predict(
        self, texts: list[str] | str, top_k: int = 5, progress: bool = True, min_score: float | None = None
    ) -> list[dict]:
        """For each text: ``label`` (the original label), ``symbol``, ``score`` and the ``top_k`` classes;
        multi-label: ``labels`` and ``symbols`` (possibly none) and every label's ``scores``.
        ``min_score``: a text whose top score is below it gets ``label`` null (multi-label: only labels
        reaching it are listed)."""
        if isinstance(texts, str):
            texts = [texts]
        rows = self.rows(list(texts), self.probabilities(texts, progress), top_k=top_k, min_score=min_score)
        return [{k: v for k, v in row.items() if k != "text"} for row in rows]

    def rows(self, texts: list[str], probs: np.ndarray, top_k: int = 5, min_score: float | None = None) -> list[dict]:
        """The prediction rows of ``texts`` given their scores (``probabilities``), each with its text."""
        if self.multi_label:
            return multilabel_rows(texts, probs, self.symbols, self.labels, min_score=min_score)
        return prediction_rows(texts, probs, self.symbols, self.labels, top_k=top_k, min_score=min_score)


def read_problem_type(folder: Path) -> str:
    """An export folder's ``problem_type`` (its config.json), single-label when it says none."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "single_label_classification"  # early ONNX exports had no config.json
    return str(config.get("problem_type") or "single_label_classification")


def warn_if_training(run: Path, checkpoint: str) -> None:
    writer = writer_of(run)
    if writer:
        log.warning(
            "%s is still being trained (PID %s): %s is the best checkpoint so far, not the run's result; "
            "its answers will change when training goes on",
            run,
            writer,
            checkpoint,
        )


def check_onnxruntime_options(device: str, precision: str) -> None:
    if device not in ("auto", "cpu") or precision not in ("auto", "fp32"):
        raise PipelineError(
            f"the onnxruntime engines run on the CPU (fp32 or int8 graph); drop device={device!r} "
            f"precision={precision!r} or use the torch engine"
        )
