"""Run an ONNX export folder through optimum, in optimum's own environment (it may pin another
transformers than the project's). Called by bench/bench_export_interop.py:

    <optimum venv>/bin/python bench/optimum_check.py FOLDER texts.json result.json

result.json: {"versions": {...}, "fp32": [[p per class in id2label order], ...], "int8": [...] | null,
"outputs": [the graph's output names as optimum's session sees them]}.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path


def probabilities(folder: str, texts: list[str], file_name: str) -> tuple[list[list[float]], list[str]]:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    model = ORTModelForSequenceClassification.from_pretrained(folder, file_name=file_name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, truncation=True)
    labels = model.config.id2label
    order = [labels[i] for i in range(len(labels))]
    rows = [[{s["label"]: s["score"] for s in scores}[label] for label in order] for scores in classify(texts)]
    return rows, [o.name for o in model.model.get_outputs()]


def main(folder: str, texts_path: str, out_path: str) -> None:
    texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))
    fp32, outputs = probabilities(folder, texts, "model.onnx")
    try:
        int8, _ = probabilities(folder, texts, "model_quantized.onnx")
    except Exception as e:
        int8 = f"{type(e).__name__}: {e}"
    result = {
        "versions": {p: version(p) for p in ("optimum", "optimum-onnx", "transformers", "onnxruntime", "torch")},
        "fp32": fp32,
        "int8": int8,
        "outputs": outputs,
    }
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:4])
