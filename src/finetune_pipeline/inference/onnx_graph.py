"""Reading an ONNX export: its graph run by onnxruntime, its int8 graph and tokenizer, under the
names of this version's folders and of earlier ones (``model.int8.onnx``, ``tokenizer/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finetune_pipeline.artifacts.names import TOKENIZER_DIR
from finetune_pipeline.errors import PipelineError

INPUTS = ("input_ids", "attention_mask")
MODEL, INT8_MODEL, OLD_INT8_MODEL = "model.onnx", "model_quantized.onnx", "model.int8.onnx"
OUTPUTS = ("logits", "probabilities")  # optimum reads the first


def int8_graph(folder: Path) -> Path | None:
    """The folder's int8 graph under its current or its earlier name; None when it has none."""
    return next((folder / n for n in (INT8_MODEL, OLD_INT8_MODEL) if (folder / n).is_file()), None)


def tokenizer_folder(folder: Path) -> Path:
    """Where an ONNX export keeps its tokenizer: its root, or tokenizer/ in earlier exports."""
    return (
        folder / TOKENIZER_DIR
        if (folder / TOKENIZER_DIR).is_dir() and not (folder / "tokenizer_config.json").is_file()
        else folder
    )


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
            raise PipelineError(
                f"{path}: not a readable ONNX graph ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if inputs != set(INPUTS) or "probabilities" not in outputs or len(outputs["probabilities"]) != 2:
            raise PipelineError(
                f"{path}: not a classifier graph of this tool (inputs {sorted(inputs)}, outputs "
                f"{sorted(outputs)}; expected {list(INPUTS)} -> probabilities (batch, classes))"
            )
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
