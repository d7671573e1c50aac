"""The recipe's records: pinned first losses (golden values), metrics.jsonl, checkpoints that carry
the head's config, and the learning-rate schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from finetune_pipeline.artifacts.metrics_record import RunMetrics
from finetune_pipeline.config.schema import LrSchedule
from finetune_pipeline.training.schedule import build_scheduler, lr_multiplier

# the first five training losses of the tiny backbone (seed 0) on the shipped example data, logged
# every step; measured with torch 2.13.0 (CPU, fp32). A change here is a change in what the recipe
# computes: data order, initialisation, loss scaling, dropout masks or the optimizer. Last changed
# 2026-12-05: the head's dropout masks are drawn four to a random word (runtime/dropout.py).
GOLDEN = {
    "head over cached features": ([], [1.630899, 1.619525, 1.629294, 1.644796, 1.646066]),
    "fine-tuning": (["training.freeze_backbone=false"], [1.630899, 1.619525, 1.629259, 1.644571, 1.645582]),
}


@pytest.mark.parametrize("path", GOLDEN)
def test_the_first_losses_are_pinned(in_project, path):
    overrides, expected = GOLDEN[path]
    _, run, _ = in_project("golden", "training.log_every_steps=1", *overrides)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "step"][:5]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-4, atol=1e-5)


def test_metrics_jsonl_holds_every_logged_step_and_the_epochs(in_project):
    _, run, _ = in_project("curves", "training.log_every_steps=4")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps, epochs = [r for r in rows if r["kind"] == "step"], [r for r in rows if r["kind"] == "epoch"]
    metrics = RunMetrics.read(run)
    assert [{k: v for k, v in e.items() if k != "kind"} for e in epochs] == metrics.history
    assert [(s["epoch"], s["step"]) for s in steps] == [(e, s) for e in (1, 2) for s in (4, 8, 12, 16)]
    assert all(s["texts_per_second"] > 0 and set(s["lr"]) == {"head", "head_no_decay"} for s in steps)
    assert [s["opt_steps"] for s in steps] == [4, 8, 12, 16, 20, 24, 28, 32]


def test_checkpoints_carry_the_heads_config(in_project):
    _, run, _ = in_project("head", "model.hidden_dim=24", "model.pooling=cls")
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    temperature = json.loads((run / "metrics.json").read_text())["calibration"]["temperature"]
    assert ckpt["head"] == {
        "in_dim": 64,
        "hidden_dim": 24,
        "classes": 5,
        "pooling": "cls",
        "dropout": 0.1,
        "chunk_stride": None,
        "chunk_pooling": None,
        "temperature": temperature,
        "multi_label": False,
        "thresholds": None,
    }  # truncated texts
    from finetune_pipeline import Classifier

    clf = Classifier.from_run(run, precision="fp32")
    assert clf.model.pooling.value == "cls" and clf.model.head[1].out_features == 24


@pytest.mark.parametrize("kind", list(LrSchedule))
def test_lr_schedules_warm_up_then_follow_their_shape(kind):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, total_steps=20, warmup_ratio=0.2, kind=kind)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.0, 0.25, 0.5, 0.75]  # 4 warm-up steps
    after = lrs[4:]
    if kind == LrSchedule.linear:
        assert after == pytest.approx([lr_multiplier(s, 4, 20) for s in range(4, 20)])
    elif kind == LrSchedule.cosine:
        assert after == pytest.approx([0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in range(4, 20)])
    else:
        assert after == [1.0] * 16


def test_metrics_json_says_where_the_run_came_from(in_project):
    import subprocess
    import sys

    from helpers import REPO

    _, run, _ = in_project("provenance")
    record = RunMetrics.read(run).provenance
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a git checkout (CI clones one)
        assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)
    assert record["packages"]["torch"] == torch.__version__ and record["packages"]["hydra-core"]
    assert record["python"] == ".".join(map(str, sys.version_info[:3])) and record["cpu"]
    assert "command" in record and "gpu" in record
