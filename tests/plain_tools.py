"""Load export folders the way a stranger does: transformers (and onnxruntime) only, no finetune_pipeline.

    python -I tests/plain_tools.py job.json result.json

job.json: {"cases": [{"hf": folder | null, "onnx": folder | null, "texts": [...]}, ...]}. For each
case it reports the class probabilities (in id2label order) that each tool gives, and what happens
when a folder is loaded without ``trust_remote_code``. Run by tests/test_export_interop.py; the
process must never import finetune_pipeline (checked at the end).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def through_pipeline(folder: str, texts: list[str], **kwargs) -> list[list[float]]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=folder, top_k=None, **kwargs)
    labels = classify.model.config.id2label
    order = [labels[i] for i in range(len(labels))]
    return [[{s["label"]: s["score"] for s in scores}[label] for label in order] for scores in classify(texts)]


def through_auto_model(folder: str, texts: list[str]) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**batch).logits.softmax(dim=-1).tolist()


def without_trust(folder: str) -> dict:
    """What transformers does with the folder when trust_remote_code is not given."""
    from transformers import AutoModelForSequenceClassification, pipeline

    outcome = {}
    for name, load in (
        ("auto_model", lambda: AutoModelForSequenceClassification.from_pretrained(folder)),
        ("pipeline", lambda: pipeline("text-classification", model=folder)),
    ):
        try:
            load()
            outcome[name] = "loaded"
        except Exception as e:
            outcome[name] = f"refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return outcome


def through_onnxruntime(folder: str, texts: list[str]) -> dict:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    feed = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    outputs = session.run(None, feed)
    names = [o.name for o in session.get_outputs()]
    return {
        "outputs": names,
        "from_logits": softmax(outputs[0]).tolist(),
        "probabilities": outputs[names.index("probabilities")].tolist(),
    }


def main(path: str) -> dict:
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    results = []
    for case in job["cases"]:
        texts, result = case["texts"], {}
        if case.get("hf"):
            result["pipeline"] = through_pipeline(case["hf"], texts, trust_remote_code=True)
            import torch

            result["pipeline_bf16"] = through_pipeline(case["hf"], texts, trust_remote_code=True, dtype=torch.bfloat16)
            result["auto_model"] = through_auto_model(case["hf"], texts)
            result["without_trust"] = without_trust(case["hf"])
        if case.get("onnx"):
            result["onnxruntime"] = through_onnxruntime(case["onnx"], texts)
        results.append(result)
    return {
        "results": results,
        "imported_finetune_pipeline": any(m.startswith("finetune_pipeline") for m in sys.modules),
    }


if __name__ == "__main__":
    result = main(sys.argv[1])  # into a file: transformers' trust prompt writes to stdout
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")
