"""Records stay trustworthy under misuse (2/3): divergence, backbones, rare classes, the freeze proof,
gradient accumulation, precision, JSON."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

from finetune_pipeline.artifacts.atomic import to_json, write_json
from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.backbone.load import read_config, read_encoder, read_tokenizer
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.sweep.compare import compare
from finetune_pipeline.sweep.jobs import read_job
from finetune_pipeline.training.divergence import MAX_SKIPPED_STEPS, Diverged, DivergenceCheck
from helpers import compose_config, write_run_metrics

# -- 4. a diverging run never ends as a success -----------------------------------------------------


def test_a_diverging_run_fails_in_one_line_and_keeps_no_nan_checkpoint(in_project):
    with pytest.raises(Diverged) as err:
        in_project("diverged", "training.learning_rate=1e6", "training.max_grad_norm=0", "training.warmup_ratio=0")
    message = str(err.value)
    assert "\n" not in message and "training diverged at epoch 1" in message
    assert "training.learning_rate=1e+06" in message and "step" in message and "loss=" in message


def test_the_diverged_runs_folder_says_so_and_compare_never_calls_it_ok(in_project, project):
    with pytest.raises(Diverged):
        in_project("diverged", "training.learning_rate=1e6", "training.max_grad_norm=0", "training.warmup_ratio=0")
    folder = project / "runs" / "diverged"
    failure = json.loads((folder / "failed.json").read_text())
    assert failure["status"] == "diverged" and "training diverged" in failure["error"]
    assert not (folder / "metrics.json").exists()
    for name in ("best_model.pt", "final_model.pt"):
        if (folder / name).exists():  # a checkpoint of a finite epoch may stay; never a non-finite one
            state = torch.load(folder / name, weights_only=True)["state_dict"]
            assert all(torch.isfinite(t).all() for t in state.values())
    (folder / ".hydra").mkdir()
    job = read_job(folder)
    assert job.status == "diverged" and compare([folder]).startswith("No configuration finished.")


def test_a_legacy_metrics_file_with_bare_nan_reads_as_diverged(tmp_path):
    (tmp_path / ".hydra").mkdir()
    write_run_metrics(tmp_path, best=0.3, test_acc=0.2)
    text = (tmp_path / "metrics.json").read_text()
    (tmp_path / "metrics.json").write_text(text.replace('"value": 0.3', '"value": NaN'))  # as older versions wrote
    assert read_job(tmp_path).status == "diverged"
    text = compare([tmp_path])
    assert "diverged" in text and "No configuration finished." in text


def test_fp16_tolerates_skipped_steps_but_not_a_run_of_them():
    check = DivergenceCheck(uses_grad_scaler=True, hint="lower it")
    for step in range(1, MAX_SKIPPED_STEPS):
        check.step(1, step, 100, loss=float("inf"), grad_norm=float("nan"))  # the scaler skips these
    check.step(1, MAX_SKIPPED_STEPS, 100, loss=0.7, grad_norm=1.0)  # a good step resets the count
    for step in range(MAX_SKIPPED_STEPS - 1):
        check.step(2, step + 1, 100, loss=0.7, grad_norm=float("inf"))
    with pytest.raises(Diverged, match=f"{MAX_SKIPPED_STEPS} steps in a row"):
        check.step(2, MAX_SKIPPED_STEPS, 100, loss=0.7, grad_norm=float("inf"))
    with pytest.raises(Diverged, match=r"epoch 3, step 4/9: loss=nan, gradient norm=1; lower it"):
        DivergenceCheck(uses_grad_scaler=False, hint="lower it").step(3, 4, 9, float("nan"), 1.0)


@pytest.mark.parametrize(
    "override",
    [
        "training.learning_rate=inf",
        "training.learning_rate=nan",
        "model.dropout=-inf",
        "training.max_grad_norm=inf",
        "data.train_ratio=nan",
        "training.label_smoothing=nan",
        "training.weight_decay=inf",
    ],
)
def test_non_finite_config_numbers_are_refused(override):
    with pytest.raises(PipelineError, match=f"{override.split('=')[0]} must be a finite number"):
        compose_config([override])


def test_every_json_the_project_writes_is_strict_json(tmp_path):
    write_json(tmp_path / "m.json", {"loss": float("nan"), "rows": [float("inf"), -float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "loss": None,
        "rows": [None, None, 1.5],
    }
    assert to_json({"score": float("nan")}) == '{"score": null}'


# -- 5. "pretrained" means pretrained --------------------------------------------------------------


def tiny_modernbert(layers: int = 2) -> ModernBertConfig:
    return ModernBertConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=64,
        local_attention=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
    )


def test_weights_of_another_architecture_are_refused_with_counts(tmp_path):
    ModernBertForMaskedLM(tiny_modernbert()).save_pretrained(tmp_path / "mlm")
    encoder = read_encoder(tmp_path / "mlm")  # an MLM checkpoint: its head is unexpected and harmless
    assert isinstance(encoder, ModernBertModel)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(tmp_path / "mlm" / "model.safetensors", wrong)
    BertConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    ).save_pretrained(wrong)
    with pytest.raises(
        PipelineError,
        match=r"do not fit the architecture in config.json \(BertModel\): "
        r"\d+ of \d+ tensors missing, \d+ unexpected",
    ):
        read_encoder(wrong)


def test_weights_with_more_layers_than_the_config_are_refused(tmp_path):
    ModernBertModel(tiny_modernbert(layers=3)).save_pretrained(tmp_path / "deep")
    tiny_modernbert(layers=2).save_pretrained(tmp_path / "deep")  # config says 2, weights hold 3 layers
    with pytest.raises(PipelineError, match=r"0 of \d+ tensors missing, [1-9]\d* unexpected"):
        read_encoder(tmp_path / "deep")


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"model_type": "no-such-model"}', "not a usable model config"),
        ('{"model_type": "modernbert", ', "not a usable model config"),
    ],
)
def test_broken_config_json_is_one_line(tmp_path, config, message):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(PipelineError, match=message) as err:
        read_config(tmp_path, trust_remote_code=False)
    assert "\n" not in str(err.value)


def test_a_folder_without_tokenizer_files_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="no tokenizer files"):
        read_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(PipelineError, match="cannot load the tokenizer"):
        read_tokenizer(tmp_path)


def test_a_local_backbone_with_mismatched_weights_stops_the_run(in_project, project, tmp_path):
    folder = project / "base_models" / "wrong"
    folder.mkdir(parents=True)
    ModernBertForMaskedLM(tiny_modernbert()).save_pretrained(tmp_path / "mlm")
    shutil.copy(tmp_path / "mlm" / "model.safetensors", folder)
    BertConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    ).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefgh"]))
    with pytest.raises(PipelineError, match="tensors missing"):
        in_project("wrong", "backbone=local", f"backbone.path={folder}", "training.freeze_backbone=false")


@pytest.mark.parametrize(
    "override, message",
    [
        ("backbone.tiny.hidden_size=63", "must be divisible by backbone.tiny.num_attention_heads"),
        ("backbone.tiny.num_hidden_layers=0", "backbone.tiny.num_hidden_layers must be >= 1"),
        ("backbone.tiny.vocab_size=3", "backbone.tiny.vocab_size must be >= 64"),
        ("backbone.tiny.local_attention=7", "backbone.tiny.local_attention must be an even number"),
        ("backbone.tiny.hidden_size=6", "must be even (rotary"),
    ],
)
def test_invalid_tiny_shapes_are_one_line(override, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")):
        compose_config(["backbone=tiny", override])


# -- 7. rare classes are tested, and every report agrees ------------------------------------------


def test_a_rare_class_is_validated_tested_and_counted_alike_everywhere(in_project, project):
    shutil.rmtree(project / "data" / "raw")
    common = [{"input": f"market report number {i} on prices", "output": "economy"} for i in range(300)]
    rare = [{"input": f"match {i} ended in a draw", "output": "sport"} for i in range(3)]
    write_json(project / "data" / "raw" / "part.json", common + rare)
    _summary, run, _ = in_project("rare", "training.epochs=1")
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "evaluation" / "test" / "report.json").read_text())
    assert report["per_class"]["sport"]["support"] >= 1 and metrics["data"]["val"] >= 2
    assert metrics["test"]["test/macro_f1"] == pytest.approx(report["macro_f1"], abs=1e-12)
    assert metrics["test"]["test/accuracy"] == pytest.approx(report["accuracy"], abs=1e-12)
    assert metrics["test"]["per_class"] == report["per_class"]  # one report, computed once


# -- 10. the freeze proof can fail; accumulation; precision -----------------------------------------


def test_the_freeze_proof_of_a_cache_hit_checks_the_weight_files(in_project, project, monkeypatch):
    _, _first, _ = in_project("first")
    _, second, log = in_project("second")
    proof = FreezeProof.read(second)
    assert "encoder not loaded" in log and proof.status == "pass"
    assert "weight files' bytes was checked" in proof.how

    import finetune_pipeline.training.recipe as recipe

    real_fit = recipe.fit
    backbone = Path(json.loads((second / "metrics.json").read_text())["backbone"]["path"])

    config = backbone / "config.json"
    original = config.read_text()

    def fit_and_change_the_encoder_files(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        config.write_text(original + " ")  # same settings, other bytes: the files changed
        return result

    monkeypatch.setattr(recipe, "fit", fit_and_change_the_encoder_files)
    try:
        _, third, log = in_project("third")
    finally:
        config.write_text(original)  # the tiny backbone is shared by the session
    proof = FreezeProof.read(third)
    assert proof.status == "fail" and "changed during the run" in log


def test_an_epochs_last_partial_accumulation_window_is_not_down_weighted(tmp_path, monkeypatch):
    """12 texts, batches of 4, accumulation 2: windows of 2 and 1 micro-batches. The second optimizer
    step must use the third batch's mean loss, as batches of 8 then 4 without accumulation do."""
    import test_training_math as math_helpers  # the module's fit helper, not a conftest import

    import finetune_pipeline.training.loop as loop

    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(12)]
    labels = [i % 3 for i in range(12)]
    big, r_big = math_helpers.run_fit(tmp_path / "a", batch_size=8, accumulation=1, texts=texts, labels=labels)
    acc, r_acc = math_helpers.run_fit(tmp_path / "b", batch_size=4, accumulation=2, texts=texts, labels=labels)
    assert r_big.opt_steps == r_acc.opt_steps == 2
    for (name, p), q in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # the old rule (divide every micro-batch by the full accumulation count) does not match
    monkeypatch.setattr(loop, "accumulation_window", lambda step, accumulation, n: accumulation)
    old, _ = math_helpers.run_fit(tmp_path / "c", batch_size=4, accumulation=2, texts=texts, labels=labels)
    assert any(not torch.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(big.parameters(), old.parameters()))


def test_precision_auto_on_a_cpu_is_decided_once_per_machine(tmp_path, monkeypatch, caplog):
    import finetune_pipeline.runtime.precision as precision
    from finetune_pipeline.config.schema import MixedPrecision

    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    speedups = iter([0.6, 2.5])  # a noisy probe would flip between these
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: next(speedups))
    with caplog.at_level(logging.INFO):
        first = precision.resolve_precision(MixedPrecision.auto, torch.device("cpu"))
        second = precision.resolve_precision(MixedPrecision.auto, torch.device("cpu"))
    assert first.name == second.name == "fp32"
    [entry] = json.loads((tmp_path / "cpu_precision.json").read_text()).values()
    assert entry["speedup"] == 0.6 and entry["precision"] == "fp32"
    assert "measured now" in caplog.text and f"remembered in {tmp_path / 'cpu_precision.json'}" in caplog.text


def test_atomic_writes_flush_the_file_and_its_folder(tmp_path, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    write_json(tmp_path / "a.json", {"x": 1})
    assert str(tmp_path) in synced and any(".a.json.tmp-" in p for p in synced)
    assert math.isfinite(json.loads((tmp_path / "a.json").read_text())["x"])
