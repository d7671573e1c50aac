"""Imbalance handling: class-weighted loss (balanced) and label smoothing."""

import json
from collections import Counter

import pytest
import torch

from finetune_pipeline.config.schema import ClassWeights
from finetune_pipeline.training.loss import class_weights, training_loss


def test_balanced_weights_follow_n_over_k_times_class_count():
    weights = class_weights([0, 0, 0, 1, 1, 2], 4, ClassWeights.balanced)
    assert weights.tolist() == pytest.approx([6 / (4 * 3), 6 / (4 * 2), 6 / (4 * 1), 0.0])  # class 3 absent: 0
    assert class_weights([0, 1], 2, ClassWeights.none) is None


def test_weighted_loss_is_the_weighted_mean_of_per_text_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 2])
    weights = class_weights(labels.tolist(), 3, ClassWeights.balanced)
    per_text = -logits.log_softmax(dim=-1)[torch.arange(6), labels]
    expected = (weights[labels] * per_text).sum() / weights[labels].sum()
    assert training_loss(weights, 0.0)(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert training_loss(None, 0.0)(logits, labels).item() == pytest.approx(per_text.mean().item(), rel=1e-6)


def test_label_smoothing_mixes_in_the_uniform_target():
    torch.manual_seed(1)
    logits, labels, eps = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]), 0.2
    log_p = logits.log_softmax(dim=-1)
    nll = -log_p[torch.arange(5), labels].mean()
    uniform = -log_p.mean(dim=-1).mean()
    expected = (1 - eps) * nll + eps * uniform
    assert training_loss(None, eps)(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_run_with_balanced_weights_and_smoothing_uses_them(in_project, project):
    # make the data imbalanced: drop most "sport" records
    raw = project / "data/raw/part-3.jsonl"
    lines = raw.read_text().splitlines()
    sport = [line for line in lines if json.loads(line)["output"] == "sport"]
    raw.write_text("\n".join([line for line in lines if line not in sport[3:]]) + "\n")
    _plain, run_plain, _ = in_project("plain")
    _weighted, run, log = in_project("weighted", "training.class_weights=balanced", "training.label_smoothing=0.1")
    metrics = json.loads((run / "metrics.json").read_text())
    id_to_label = json.loads((run / "id_to_label.json").read_text())
    assert metrics["loss"]["label_smoothing"] == 0.1
    weights = metrics["loss"]["class_weights"]
    assert set(weights) == {e["label"] for e in id_to_label.values()}
    assert weights["sport"] == max(weights.values())  # the rare class weighs most
    counts = Counter(
        json.loads(line)["output"] for line in raw.parent.joinpath("part-3.jsonl").read_text().splitlines()
    )
    assert counts["sport"] == 3
    assert "loss: class weights (balanced) culture=" in log
    plain_history = json.loads((run_plain / "metrics.json").read_text())["history"]
    assert [h["train/loss"] for h in metrics["history"]] != [h["train/loss"] for h in plain_history]
    assert json.loads((run_plain / "metrics.json").read_text())["loss"] == {
        "class_weights": None,
        "label_smoothing": 0.0,
    }


def test_label_smoothing_outside_zero_one_is_refused():
    from finetune_pipeline.errors import PipelineError
    from helpers import compose_config

    with pytest.raises(PipelineError, match=r"training.label_smoothing must be in \[0, 1\), got 1.0"):
        compose_config(["training.label_smoothing=1.0"])
