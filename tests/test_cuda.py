"""The CUDA paths (run only where a GPU is present; skipped on CPU-only machines and in CI):
fp16 autocast with a GradScaler, bf16 autocast, precision=auto on a GPU, ``gpu_mem`` in the step log."""

from __future__ import annotations

import json
import math

import pytest
import torch

from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.training.recipe import train
from helpers import IN_PROCESS, compose_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def run_on_gpu(project, tiny_cache, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(name, *overrides):
        overrides = [*IN_PROCESS, f"backbone.path={tiny_cache}", "training.device=cuda", *overrides]
        cfg = compose_config(
            [o for o in overrides if not o.startswith("precision=")]
            + [o for o in overrides if o.startswith("precision=")][-1:]
        )
        folder = project / "runs" / name
        train(cfg, folder)
        return folder, json.loads((folder / "metrics.json").read_text())

    return run


@pytest.mark.parametrize("precision", ["fp16", "bf16", "auto"])
def test_fine_tuning_on_a_gpu_in_each_precision(run_on_gpu, precision):
    folder, metrics = run_on_gpu(
        precision, f"precision={precision}", "training.freeze_backbone=false", "training.log_every_steps=1"
    )
    assert metrics["device"].startswith("cuda")
    assert metrics["precision"] == ("bf16" if precision == "auto" and torch.cuda.is_bf16_supported() else precision)
    losses = [h["train/loss"] for h in metrics["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    steps = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in steps if r["kind"] == "step")
    log = (folder / "train.log").read_text()
    assert "gpu_mem=" in log and "peak=" in log
    weights = torch.load(folder / "best_model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert FreezeProof.read(folder).status == "not_frozen"


def test_a_frozen_run_on_a_gpu_encodes_once_and_trains_the_head(run_on_gpu):
    _folder, metrics = run_on_gpu("frozen", "precision=auto")
    assert metrics["device"].startswith("cuda") and metrics["features"]["cache"] in ("miss", "hit")
    assert math.isfinite(metrics["test"]["test/loss"])


@pytest.mark.parametrize(
    "adapter", [["adapter=lora"], ["adapter=top_layers", "adapter.top_layers.layers=1"]], ids=["LoRA", "top layers"]
)
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_adapters_on_a_gpu_keep_the_base_and_train(run_on_gpu, adapter, precision):
    """LoRA and top layers with CUDA autocast (fp16 with a GradScaler and the fused AdamW, bf16)."""
    folder, metrics = run_on_gpu(f"{adapter[0]}-{precision}", f"precision={precision}", *adapter, "training.epochs=3")
    assert metrics["device"].startswith("cuda") and metrics["precision"] == precision
    losses = [h["train/loss"] for h in metrics["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert FreezeProof.read(folder).status == "pass"
