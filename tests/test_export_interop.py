"""Exports through the tools users load them with: plain transformers (AutoModel and pipeline, with
and without trust_remote_code) and plain onnxruntime, in a process that never imports
finetune_pipeline, against ``finetune-pipeline predict``'s probabilities; for both encoder families
(tiny ModernBERT, tiny BERT) and every way a run can train (frozen / fine-tuned, mean / cls pooling,
LoRA, top layers, chunked long texts with mean / max pooling). No absolute path of the machine in any
exported file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.training.recipe import train
from helpers import IN_PROCESS, REPO, build_tiny_bert, compose_config

pytest.importorskip("onnxruntime")

LONG = [
    "The central bank raised interest rates again as inflation stayed high and markets fell. " * 5,
    "Сборная выиграла матч в дополнительное время, и болельщики праздновали победу до утра. " * 4,
]
CASES = {  # name: (encoder family, overrides)
    "modernbert frozen mean": ("modernbert", []),
    "modernbert lora": ("modernbert", ["adapter=lora"]),
    "modernbert top layers cls": (
        "modernbert",
        ["adapter=top_layers", "adapter.top_layers.layers=1", "model.pooling=cls"],
    ),
    "modernbert frozen chunked max": (
        "modernbert",
        ["data.long_text=chunk", "data.chunk_stride=8", "data.chunk_pooling=max"],
    ),
    "bert frozen cls": ("bert", ["model.pooling=cls"]),
    "bert fine-tuned chunked mean": (
        "bert",
        ["training.freeze_backbone=false", "data.long_text=chunk", "data.chunk_stride=8"],
    ),
}
TOLERANCE = 1e-4
ONNX_CASES = ("modernbert frozen mean", "modernbert lora", "bert frozen cls")  # ONNX runs truncated texts only


@pytest.fixture(scope="module")
def exported(module_project):
    """name -> (run, hf folder, onnx folder or None, texts, predict's probabilities); and what the
    plain tools made of them (one subprocess for all)."""
    project, _ = module_project
    bert = build_tiny_bert(
        project / "tiny-bert",
        [
            r["input"]
            for part in sorted((project / "data" / "raw").glob("*.json"))
            for r in json.loads(part.read_text(encoding="utf-8"))
        ],
    )
    cases = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
        for i, (name, (family, overrides)) in enumerate(CASES.items()):
            backbone = (
                [f"backbone.path={project / 'tiny'}"]
                if family == "modernbert"
                else ["backbone=local", f"backbone.path={bert}"]
            )
            shared = [o for o in IN_PROCESS if not o.startswith("backbone=")] if family == "bert" else IN_PROCESS
            run = project / "runs" / f"interop-{i}"
            train(compose_config([*shared, "training.epochs=1", *backbone, *overrides]), run)
            assert main(["export", str(run), "--format", "hf"]) == 0
            with_onnx = name in ONNX_CASES  # the ONNX graph is the same code for every run kind: two families suffice
            if with_onnx:
                assert main(["export", str(run), "--format", "onnx"]) == 0
            test_texts = [
                json.loads(line)["text"]
                for line in (run / "evaluation" / "test" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
            ]
            texts = test_texts[:12] + LONG
            expected = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts, progress=False)
            cases[name] = (run, run / "export" / "hf", run / "export" / "onnx" if with_onnx else None, texts, expected)
    job = project / "plain_tools_job.json"
    job.write_text(
        json.dumps(
            {
                "cases": [
                    {"hf": str(hf), "onnx": str(onnx) if onnx else None, "texts": texts}
                    for _, hf, onnx, texts, _ in cases.values()
                ]
            }
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(project / "hf_modules"), HF_HUB_OFFLINE="1")
    result = project / "plain_tools_result.json"
    proc = subprocess.run(
        [sys.executable, "-I", str(REPO / "tests" / "plain_tools.py"), str(job), str(result)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(result.read_text(encoding="utf-8"))
    return project, cases, dict(zip(cases, report["results"])), report["imported_finetune_pipeline"], bert


@pytest.mark.parametrize("name", CASES)
def test_plain_transformers_gives_predicts_probabilities(exported, name):
    _, cases, results, imported, _ = exported
    run, hf, _, _texts, expected = cases[name]
    assert not imported  # the checks ran without finetune_pipeline
    for tool in ("pipeline", "auto_model"):
        got = np.asarray(results[name][tool])
        assert got.shape == expected.shape, tool
        assert np.abs(got - expected).max() <= TOLERANCE, (tool, np.abs(got - expected).max())
    half = np.asarray(results[name]["pipeline_bf16"])  # loaded in bf16 (dtype=torch.bfloat16): runs, same scale
    assert half.shape == expected.shape and np.allclose(half.sum(axis=1), 1.0, atol=1e-3)
    assert np.abs(half - expected).max() < 0.05
    config = json.loads((hf / "config.json").read_text())
    labels = [c["label"] for c in json.loads((run / "id_to_label.json").read_text()).values()]
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_finetune_pipeline.")


@pytest.mark.parametrize("name", CASES)
def test_without_trust_remote_code_transformers_refuses_instead_of_guessing(exported, name):
    _, _, results, _, _ = exported
    outcome = results[name]["without_trust"]
    assert outcome["auto_model"].startswith("refused") and outcome["pipeline"].startswith("refused"), outcome
    assert "trust_remote_code" in outcome["auto_model"] or "custom code" in outcome["auto_model"]


@pytest.mark.parametrize("name", ONNX_CASES)
def test_plain_onnxruntime_reads_logits_first_and_the_folder_has_optimums_layout(exported, name):
    _, cases, results, _, _ = exported
    _, _, onnx, _texts, expected = cases[name]
    got = results[name]["onnxruntime"]
    assert got["outputs"] == ["logits", "probabilities"]
    assert np.abs(np.asarray(got["from_logits"]) - expected).max() <= TOLERANCE
    assert np.abs(np.asarray(got["probabilities"]) - expected).max() <= TOLERANCE
    files = {p.name for p in onnx.iterdir()}
    assert {
        "model.onnx",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= files and "tokenizer" not in files
    config = json.loads((onnx / "config.json").read_text())
    assert config["model_type"] in ("modernbert", "bert") and len(config["id2label"]) == expected.shape[1]
    assert config["label2id"] == {label: int(i) for i, label in config["id2label"].items()}


def test_no_exported_file_holds_a_path_of_this_machine(exported):
    project, cases, _, _, bert = exported
    local = [str(project), str(project.resolve()), str(bert), str(REPO), os.path.expanduser("~")]
    for run, hf, onnx, _, _ in cases.values():
        for folder in (hf, onnx):
            for file in (p for p in (folder.rglob("*") if folder else []) if p.is_file()):
                data = file.read_bytes()
                held = [path for path in {*local, str(run)} if path.encode() in data]
                assert not held, (file, held)
    card = (cases["bert frozen cls"][1] / "README.md").read_text()
    assert "tiny-bert" in card and 'base_model: "tiny-bert"' in card  # named, not located


def test_the_model_card_states_the_folders_own_test_figures(exported):
    _, cases, _, _, _ = exported
    run, hf, _, _, _ = cases["modernbert frozen mean"]
    report = json.loads((hf / "export.json").read_text())
    card = (hf / "README.md").read_text()
    assert f"| {report['test']['accuracy']:.4f} | {report['test']['macro_f1']:.4f} |" in card
    assert report["source"]["run"] == run.name and set(report["files"]) >= {
        "model.safetensors",
        "config.json",
        "modeling_finetune_pipeline.py",
    }


def test_the_shipped_model_code_and_the_projects_reader_name_the_same_model_type():
    from finetune_pipeline.export.hf_modeling import FinetunePipelineConfig
    from finetune_pipeline.inference.hf_folder import MODEL_TYPE

    assert FinetunePipelineConfig.model_type == MODEL_TYPE
