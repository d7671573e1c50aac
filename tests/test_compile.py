"""``training.compile``: the decision, and (slow: inductor compiles for about a minute on 2 cores) a
compiled fine-tuning run whose checkpoints are the eager model's and whose kernels land in the cache."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_pipeline.config.schema import TrainingPath
from finetune_pipeline.training.compiled import compile_model, compile_wanted


def test_only_true_compiles_and_never_a_head_over_cached_features(tmp_path):
    assert [compile_wanted(v) for v in ("auto", "true", "false", True, False)] == [False, True, False, True, False]
    head = torch.nn.Linear(4, 2)
    assert not compile_model(head, "true", TrainingPath.cached_features, tmp_path)
    assert not compile_model(head, "auto", TrainingPath.full, tmp_path)
    assert head._compiled_call_impl is None  # nn.Module.compile was never called


@pytest.mark.slow
def test_a_compiled_fine_tuning_run_writes_the_eager_models_checkpoints(in_project, project, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    overrides = ("training.freeze_backbone=false", "training.epochs=1", "precision=fp32", "training.log_every_steps=1")
    overrides += ("model.dropout=0",)  # inductor draws dropout masks from its own generator
    _, compiled, log = in_project("compiled", "training.compile=true", *overrides)
    _, eager, _ = in_project("eager", *overrides)
    assert "torch.compile (inductor, dynamic shapes)" in log
    a = torch.load(compiled / "final_model.pt", weights_only=True)["state_dict"]
    b = torch.load(eager / "final_model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()  # no _orig_mod. prefixes: the checkpoint loads like any other
    first = [json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"] for run in (compiled, eager)]
    assert first[0] == pytest.approx(first[1], abs=1e-4)  # the same forward pass (fused kernels round apart)
    test = [json.loads((run / "metrics.json").read_text())["test"]["test/loss"] for run in (compiled, eager)]
    assert test[0] == pytest.approx(test[1], abs=0.02)  # Adam's sign-like updates let the weights drift ~lr apart
    assert any((project / "data" / "cache" / "torchinductor").iterdir())  # reused by the next run
