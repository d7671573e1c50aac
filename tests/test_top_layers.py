"""adapter=top_layers: the top N layers train over cached token states of the frozen bottom layers.
Resume: test_resume.py; torchrun: test_distributed.py (slow)."""

import json

import pytest
import torch
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel

from finetune_pipeline import Classifier
from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.top_layers import bottom_only, check_layers, top_only, top_parameter_prefixes
from helpers import compose_config

TOP = ["adapter=top_layers", "adapter.top_layers.layers=1", "backbone.tiny.num_hidden_layers=3", "training.epochs=2"]


def tiny_encoders():
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32)
    )
    modern = ModernBertModel(
        ModernBertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=32,
            local_attention=4,
            global_attn_every_n_layers=3,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
        )
    )
    return {"BERT": bert, "ModernBERT (local + global attention)": modern}


@pytest.mark.parametrize("name", ["BERT", "ModernBERT (local + global attention)"])
def test_top_layers_over_the_bottoms_states_are_the_whole_encoder(name):
    encoder = tiny_encoders()[name].eval()
    ids = torch.randint(3, 50, (3, 24))
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, 10:] = 0
    whole = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    for layers in (1, 2, 3):
        first = check_layers(encoder, layers)
        with bottom_only(encoder, first):
            states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        with top_only(encoder, first):
            out = encoder(inputs_embeds=states, attention_mask=mask).last_hidden_state
        real = mask.bool()
        torch.testing.assert_close(out[real], whole[real], rtol=0, atol=1e-6)
    assert len(encoder.state_dict()) == len(tiny_encoders()[name].state_dict())  # the views left no trace
    with pytest.raises(PipelineError, match="train 1 to 3 of them"):
        check_layers(encoder, 4)


@pytest.fixture(scope="module")
def runs(module_project):
    _, train_run = module_project
    return {"top": train_run("top", *TOP), "again": train_run("again", *TOP, "model.hidden_dim=24")}


def test_only_the_top_layer_trains_and_the_rest_is_bit_identical(runs):
    run = runs["top"]
    proof = FreezeProof.read(run)
    assert proof.status == "pass" and proof.adapter == "top_layers"
    assert proof.tensors_changed and all(n.startswith(("layers.2.", "final_norm.")) for n in proof.tensors_changed)
    unchanged = [n for n in proof.tensor_sha256_before if n not in proof.tensors_changed]
    assert any(n.startswith("embeddings.") for n in unchanged) and any(n.startswith("layers.1.") for n in unchanged)
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    assert ckpt["kind"] == "partial" and ckpt["backbone"]["sha256"] == proof.encoder_sha256_before
    assert {k.split(".")[1] for k in ckpt["state_dict"] if k.startswith("encoder.")} == {"layers", "final_norm"}
    assert all(k.startswith(("head.", "encoder.layers.2.", "encoder.final_norm.")) for k in ckpt["state_dict"])
    log = (run / "train.log").read_text()
    assert "token-state cache: miss" in log and "encoder layers 2-2 trained over cached states of layers 0-1" in log
    features = json.loads((run / "metrics.json").read_text())["features"]
    assert features["layer"] == 2 and features["bytes"] > 0


def test_a_second_run_reuses_the_cached_states(runs):
    log = (runs["again"] / "train.log").read_text()
    assert "token-state cache: hit" in log and "encoded" not in log
    keys = [json.loads((runs[r] / "metrics.json").read_text())["features"]["key"] for r in ("top", "again")]
    assert keys[0] == keys[1]


def test_predictions_match_the_runs_own_test_predictions(runs):
    run = runs["top"]
    rows = [json.loads(x) for x in (run / "evaluation" / "test" / "predictions.jsonl").read_text().splitlines()]
    clf = Classifier.from_run(run, device="cpu", precision="fp32")
    probs = clf.probabilities([r["text"] for r in rows])
    assert max(abs(r["score"] - float(p.max())) for r, p in zip(rows, probs)) < 1e-4


def test_a_top_layers_run_exports_as_a_whole_encoder(runs, tmp_path):
    import numpy as np

    from finetune_pipeline.cli.pipeline import main as pipeline_main

    run = runs["top"]  # its checkpoint holds the trained top layers + head; the export is the whole model
    assert pipeline_main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert json.loads((tmp_path / "onnx" / "export.json").read_text())["max_abs_probability_difference"] <= 1e-4
    assert pipeline_main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    texts = ["The national currency announced new tax cuts", "Сборная вышла в финал"]
    expected = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts)
    again = Classifier.from_pretrained(tmp_path / "hf", device="cpu", precision="fp32").probabilities(texts)
    assert np.abs(again - expected).max() <= 1e-5


def test_the_verdict_fails_when_a_bottom_tensor_changes(module_project, monkeypatch):
    import finetune_pipeline.training.builders as builders

    real = builders.freeze_all_but_top

    def leaky(encoder, layers):  # a bug that writes into a bottom layer (gradients never reach it)
        real(encoder, layers)
        with torch.no_grad():
            encoder.get_parameter("layers.0.attn.Wqkv.weight").mul_(1.001)

    monkeypatch.setattr(builders, "freeze_all_but_top", leaky)
    _, train_run = module_project
    run = train_run("leaky-top", *TOP, "data.seed=5")  # another seed: another cache entry, another encoder
    proof = FreezeProof.read(run)
    assert proof.status == "fail" and proof.verdict.startswith("FAIL: 1 tensors outside the trained top layers")
    assert "layers.0.attn.Wqkv.weight" in proof.tensors_changed


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["adapter=top_layers", "adapter.top_layers.layers=0"], r"adapter\.top_layers\.layers must be >= 1"),
        (
            ["adapter=top_layers", "adapter.top_layers.cache_dtype=int8"],
            r"adapter\.top_layers\.cache_dtype must be fp16, bf16 or fp32",
        ),
        (["adapter=top_layers", "data.long_text=chunk"], "not supported with adapter=top_layers"),
    ],
)
def test_bad_top_layer_settings_fail_before_anything_loads(overrides, message):
    with pytest.raises(PipelineError, match=message):
        compose_config(["backbone=tiny", *overrides])


def test_prefixes_name_the_top_layers_of_either_architecture():
    encoders = tiny_encoders()
    assert top_parameter_prefixes(encoders["BERT"], 2) == ["encoder.layer.2.", "encoder.layer.3."]
    assert top_parameter_prefixes(encoders["ModernBERT (local + global attention)"], 1) == ["layers.3.", "final_norm."]
