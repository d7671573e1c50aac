"""ONNX export: one graph from token ids to probabilities that matches the PyTorch model, for frozen
(head-only checkpoint) and fine-tuned runs, on texts longer than the encoder's local-attention window;
the onnxruntime engine of predict/evaluate and Classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_pipeline.cli.predict_evaluate import main
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.inference.predictor import Classifier

pytest.importorskip("onnxruntime")

# the tiny backbone attends 32 tokens to each side (local_attention 64): these run past the window
LONG = ["The central bank raised interest rates again as inflation stayed high. " * 6,
        "Сборная выиграла матч в дополнительное время, и болельщики праздновали победу до утра. " * 4]
SHORT = ["Stocks fell", "Новый смартфон", "a"]
RUNS = {"frozen (head-only checkpoint)": [], "fine-tuned": ["training.freeze_backbone=false"]}


@pytest.fixture(scope="module")
def runs(module_project):
    _, train_run = module_project
    return {name: train_run(f"export-{i}", "data.max_length=160", *overrides) for i, (name, overrides) in enumerate(RUNS.items())}


@pytest.mark.parametrize("kind", RUNS)
def test_the_onnx_graph_matches_pytorch_and_int8_is_reported(runs, kind):
    run = runs[kind]
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    folder = run / "export" / "onnx"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model.int8.onnx", "tokenizer", "id_to_label.json",
                                                   "label_to_id.json", "export.json"}
    report = json.loads((folder / "export.json").read_text())
    assert report["max_abs_probability_difference"] <= 1e-4 and report["test_texts"] >= 10
    assert set(report["test_accuracy"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["int8_accuracy_change"] == pytest.approx(report["test_accuracy"]["onnx_int8"]
                                                           - report["test_accuracy"]["onnx_fp32"])

    torch_clf = Classifier.from_run(run, device="cpu", precision="fp32")
    onnx_clf = Classifier.from_onnx_export(folder)  # the folder alone: no run folder, no backbone
    assert len(torch_clf.tokenizer(LONG[0])["input_ids"]) > 64 and onnx_clf.labels == torch_clf.labels
    texts = LONG + SHORT
    expected = torch_clf.probabilities(texts)
    assert np.abs(onnx_clf.probabilities(texts) - expected).max() <= 1e-4
    int8 = Classifier.from_onnx_export(folder)
    int8.graph = type(int8.graph)(folder / "model.int8.onnx", int8.tokenizer.pad_token_id)
    assert int8.probabilities(texts).shape == expected.shape


def test_predict_with_the_onnxruntime_engine_exports_once_and_agrees(runs, tmp_path, capsys):
    run = runs["fine-tuned"]
    (tmp_path / "texts.txt").write_text("\n".join(LONG + SHORT), encoding="utf-8")
    assert main(["predict", str(run), "--input", str(tmp_path / "texts.txt"), "--precision", "fp32", "--top-k", "1"]) == 0
    by_torch = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    final = run / "export" / "onnx-final_model"
    assert not final.exists()
    assert main(["predict", str(run), "--input", str(tmp_path / "texts.txt"), "--engine", "onnxruntime",
                 "--checkpoint", "final_model.pt", "--top-k", "1"]) == 0  # exported on the fly, for that checkpoint
    assert (final / "model.onnx").is_file()
    assert json.loads((final / "export.json").read_text())["source"]["checkpoint"] == "final_model.pt"
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "texts.txt"), "--engine", "onnxruntime",
                 "--top-k", "1"]) == 0
    by_onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in by_onnx] == [r["label"] for r in by_torch]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(by_onnx, by_torch)) <= 1e-4


def test_an_existing_export_is_kept_and_a_broken_graph_is_one_line(runs, tmp_path, caplog):
    run = runs["frozen (head-only checkpoint)"]
    out = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(out)]) == 0
    before = (out / "model.onnx").read_bytes()
    assert main(["export", str(run), "--out", str(out)]) == 1
    assert "an export is already there; pass --overwrite" in caplog.text
    assert (out / "model.onnx").read_bytes() == before
    (out / "model.onnx").write_bytes(before[: len(before) // 2])  # truncated
    with pytest.raises(PipelineError, match="model.onnx: not a readable ONNX graph"):
        Classifier.from_onnx_export(out)
    with pytest.raises(PipelineError, match="not an ONNX export folder"):
        Classifier.from_onnx_export(tmp_path)
