"""Same config and seed, same results; early stopping."""

import json

import pytest
import torch


@pytest.mark.parametrize(
    "path", ["training.cache_features=true", "training.cache_features=false", "training.freeze_backbone=false"]
)
def test_same_config_and_seed_give_identical_metrics_and_weights(in_project, path):
    first, run1, _ = in_project("a", path)
    second, run2, _ = in_project("b", path)
    assert first == second  # exact, not approximate
    history = [json.loads((r / "metrics.json").read_text())["history"] for r in (run1, run2)]
    assert [h["train/loss"] for h in history[0]] == [h["train/loss"] for h in history[1]]
    heads = [torch.load(r / "classifier_head.pt", weights_only=True) for r in (run1, run2)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    third, _, _ = in_project("c", path, "data.seed=7")
    assert third != first  # the seed matters


def test_early_stopping_stops_after_patience_epochs_without_improvement(in_project):
    # a learning rate this small cannot move the metric: the first epoch stays the best
    _, run, log = in_project(
        "stop", "training.epochs=10", "training.learning_rate=1e-12", "training.early_stopping_patience=2"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["best"]["epoch"] == 1 and metrics["best"]["stopped_early"] is True
    assert "early stopping: no better val/macro_f1 for 2 epochs" in log
