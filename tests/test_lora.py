"""adapter=lora: peft adapters in a frozen encoder — small checkpoints, a freeze proof that can fail,
predict, the exports (adapters merged). Resume: test_resume.py; torchrun: test_distributed.py (slow)."""

import json

import pytest
import torch

from finetune_pipeline import Classifier
from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.errors import PipelineError
from helpers import compose_config

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def runs(module_project):
    _project, train_run = module_project
    return {"lora": train_run("lora", "adapter=lora", "training.epochs=2")}


def test_a_lora_run_keeps_the_base_bit_identical_and_checkpoints_only_head_and_adapters(runs):
    run = runs["lora"]
    proof = FreezeProof.read(run)
    assert proof.status == "pass" and proof.adapter == "lora"
    assert proof.encoder_unchanged and proof.tensors_changed == []
    assert proof.encoder_sha256_before == proof.encoder_sha256_after
    assert proof.tensor_sha256_before.keys() == proof.tensor_sha256_after.keys()  # the base's own names
    assert not any("lora" in n or "base_layer" in n for n in proof.tensor_sha256_before)
    adapters = proof.adapter_tensor_sha256
    assert adapters and all("lora_A" in n or "lora_B" in n for n in adapters)
    # every ModernBERT target of every layer got an adapter
    assert {n.split(".")[-4] for n in adapters} == {"Wqkv", "Wo", "Wi"}
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    assert (
        ckpt["kind"] == "lora" and ckpt["lora"]["rank"] == 8 and ckpt["lora"]["target_modules"] == ["Wqkv", "Wo", "Wi"]
    )
    assert ckpt["backbone"]["sha256"] == proof.encoder_sha256_before
    assert all(k.startswith("head.") or "lora_" in k for k in ckpt["state_dict"])
    trainable = proof.trainable_parameters
    assert 0 < trainable["encoder"] < 0.2 * trainable["encoder_total"]
    full = 4 * (trainable["encoder_total"] + trainable["head"])  # fp32 bytes a full checkpoint holds at least
    assert (run / "best_model.pt").stat().st_size < 0.3 * full  # tiny encoder; mmBERT-base: docs/benchmarks.md


def test_lora_predictions_match_the_runs_own_test_predictions(runs):
    run = runs["lora"]
    rows = [json.loads(x) for x in (run / "evaluation" / "test" / "predictions.jsonl").read_text().splitlines()]
    clf = Classifier.from_run(run, device="cpu", precision="fp32")  # adapters merged into the weights
    assert not any("lora_" in n for n in clf.model.state_dict())
    probs = clf.probabilities([r["text"] for r in rows])
    assert max(abs(r["score"] - float(p.max())) for r, p in zip(rows, probs)) < 1e-4
    assert [r["label"] for r in rows] == [clf.labels[i] for i in probs.argmax(1)]


def test_lora_runs_export_with_the_adapters_merged(runs, tmp_path):
    run = runs["lora"]
    assert pipeline_main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert report["max_abs_probability_difference"] <= 1e-4
    assert pipeline_main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    texts = ["The national currency announced new tax cuts", "Сборная вышла в финал"]
    again = Classifier.from_pretrained(tmp_path / "hf", device="cpu", precision="fp32").probabilities(texts)
    torch.testing.assert_close(
        torch.tensor(again),
        torch.tensor(Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_the_lora_verdict_fails_when_a_base_weight_changes(module_project, monkeypatch):
    import finetune_pipeline.training.builders as builders

    real = builders.add_lora

    def add_lora_and_leak(encoder, spec):  # a bug that lets one base weight train along
        encoder = real(encoder, spec)
        next(p for n, p in encoder.named_parameters() if "base_layer" in n).requires_grad_(True)
        return encoder

    monkeypatch.setattr(builders, "add_lora", add_lora_and_leak)
    _, train_run = module_project
    run = train_run("leaky", "adapter=lora", "training.epochs=1")
    proof = FreezeProof.read(run)
    assert proof.status == "fail" and proof.verdict.startswith("FAIL: LoRA was to leave the base encoder unchanged")
    assert len(proof.tensors_changed) == 1 and "base_layer" not in proof.tensors_changed[0]


def test_a_lora_checkpoint_refuses_another_backbone(runs, module_project, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _project, _ = module_project
    ckpt = torch.load(runs["lora"] / "best_model.pt", weights_only=True)
    other = tmp_path / "other"
    shutil.copytree(ckpt["backbone"]["path"], other)
    weights = next(other.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights)
    with pytest.raises(PipelineError, match="trained on a backbone with sha256"):
        Classifier.from_run(runs["lora"], backbone_path=other)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["adapter=lora", "adapter.method=top_layers"],
            "adapter.top_layers is required when adapter.method=top_layers",
        ),
        (["adapter=lora", "adapter.lora.rank=0"], r"adapter\.lora\.rank must be >= 1"),
        (["adapter=lora", "adapter.lora.dropout=1.5"], r"adapter\.lora\.dropout must be in \[0, 1\)"),
        (["adapter=lora", "adapter.lora.target_modules=[]"], "non-empty list"),
    ],
)
def test_bad_lora_settings_fail_before_anything_loads(overrides, message):
    with pytest.raises(PipelineError, match=message):
        compose_config(["backbone=tiny", *overrides])


def test_unknown_target_modules_and_bert_defaults():
    from transformers import BertConfig, BertModel

    from finetune_pipeline.model.adapters import LoraSpec, add_lora, lora_spec

    bert = BertModel(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    )
    spec = lora_spec(compose_config(["backbone=tiny", "adapter=lora"]).adapter.lora, bert)
    assert spec.target_modules == ("query", "key", "value", "dense")
    adapted = add_lora(bert, spec)
    names = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"query", "key", "value", "dense"}
    with pytest.raises(PipelineError, match=r"adapter\.lora\.target_modules=\['nope'\]"):
        add_lora(
            BertModel(
                BertConfig(
                    vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
                )
            ),
            LoraSpec(4, 8, 0.0, ("nope",)),
        )
