"""torchrun: 2 CPU processes (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from helpers import REPO, run_folders, run_train

COMMON = [
    "data.max_length=32",
    "model.hidden_dim=16",
    "model.dropout=0",
    "precision=fp32",
    "training.epochs=2",
    "training.gradient_accumulation_steps=2",
    "training.log_every_steps=4",
]
# single process: 16 texts per step; torchrun: 2 ranks x 8 texts per step, the same 16 texts
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def torchrun(project, *overrides, tiny_cache):
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "train.py"),
        "backbone=tiny",
        "training.progress_bar=false",
        "training.log_every_seconds=0",
        f"backbone.path={tiny_cache}",
        *overrides,
    ]
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def outcome(run):
    metrics = json.loads((run / "metrics.json").read_text())
    weights = torch.load(run / "final_model.pt", weights_only=True)["state_dict"]
    return metrics, weights


def assert_close_runs(single, ddp):
    (m1, w1), (m2, w2) = outcome(single), outcome(ddp)
    for h1, h2 in zip(m1["history"], m2["history"], strict=True):
        for key in ("train/loss", "val/loss", "val/accuracy", "opt_steps"):
            assert h2[key] == pytest.approx(h1[key], rel=TOLERANCE["rtol"], abs=TOLERANCE["atol"]), key
    assert m2["summary"]["test/loss"] == pytest.approx(m1["summary"]["test/loss"], rel=TOLERANCE["rtol"])
    assert m2["data"] == m1["data"] and m2["processes"] == 2 and m1["processes"] == 1
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], **TOLERANCE, msg=k)


def test_ranks_share_out_exactly_the_single_process_batches():
    """The fast in-process part of the check below: the rows the ranks take at each step are the
    single-process batch of size batch_size x world_size, every row once; eval batches likewise."""
    from finetune_pipeline.data.batches import LengthGroupedBatchSampler, sorted_batches

    lengths = [(i * 7) % 23 + 1 for i in range(101)]
    single = LengthGroupedBatchSampler(lengths, batch_size=16, seed=5)
    ranks = [LengthGroupedBatchSampler(lengths, batch_size=8, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (1, 2):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        steps = list(zip(single, *ranks))
        assert len(steps) == len(single) == len(ranks[0]) == len(ranks[1])
        for whole, part0, part1 in steps[:-1]:
            assert sorted(part0 + part1) == sorted(whole) and not set(part0) & set(part1)
    batches = sorted_batches(lengths, 8)
    assert sorted(i for b in batches[0::2] + batches[1::2] for i in b) == list(range(101))


@pytest.mark.slow
@pytest.mark.parametrize("path", ["fine-tuning", "frozen, features encoded by both ranks", "LoRA", "top layers"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(project, tiny_cache, path):
    extra = {
        "fine-tuning": ["training.freeze_backbone=false"],
        "LoRA": ["adapter=lora", "adapter.lora.dropout=0"],
        "top layers": ["adapter=top_layers", "adapter.top_layers.layers=1", "adapter.top_layers.cache_dtype=fp32"],
    }.get(path, [])
    run_train(project, *COMMON, *extra, "training.batch_size=16", tiny_cache=tiny_cache)
    single = run_folders(project)[0]
    proc = torchrun(
        project, *COMMON, *extra, "training.batch_size=8", "data.cache_dir=data/cache_ddp", tiny_cache=tiny_cache
    )
    folders = run_folders(project)
    assert len(folders) == 2  # one folder for both ranks
    ddp = next(f for f in folders if f != single)
    assert_close_runs(single, ddp)
    log = (ddp / "train.log").read_text()
    assert "(2 processes, DistributedDataParallel)" in log
    assert (
        log.count("run folder:") == 1 and "epoch=1 step=4/16" in log and "opt_steps=16" in log
    )  # rank 0 alone writes the log
    assert (ddp / ".hydra" / "config.yaml").is_file() and json.loads((ddp / "freeze_proof.json").read_text())
    if path == "LoRA":
        assert (FreezeProof.read(ddp).status, FreezeProof.read(ddp).adapter) == ("pass", "lora")
    if path == "top layers":
        assert (FreezeProof.read(ddp).status, FreezeProof.read(ddp).adapter) == ("pass", "top_layers")
    if path.startswith("frozen"):
        assert "encoding sharded over 2 ranks: [160, 160] texts each" in log
        [one] = list((project / "data" / "cache" / "features").glob("*.pt"))
        [two] = list((project / "data" / "cache_ddp" / "features").glob("*.pt"))  # written once, by rank 0
        torch.testing.assert_close(
            torch.load(two, weights_only=True)["features"],
            torch.load(one, weights_only=True)["features"],
            rtol=1e-5,
            atol=1e-6,
        )
        # again: rank 0 finds the features and the encoder's hash, and sends them to rank 1
        torchrun(project, *COMMON, "training.batch_size=8", "data.cache_dir=data/cache_ddp", tiny_cache=tiny_cache)
        [again] = [f for f in run_folders(project) if f not in folders]
        assert "encoder not loaded" in (again / "train.log").read_text()
        assert FreezeProof.read(again).status == "pass"
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_multi_label_under_torchrun_matches_one_process(project, tiny_cache):
    """Label rows (B, C) through DDP, the gathered validation scores and the thresholds tuned on them."""
    from test_multilabel import multilabel_records, write_raw

    write_raw(project, multilabel_records())
    settings = [  # 448 train texts: whole global batches (a last, partial one is averaged per rank under DDP)
        *COMMON,
        "training.freeze_backbone=false",
        "training.calibration_min_texts=0",
        "data.max_train_samples=448",
    ]
    run_train(project, *settings, "training.batch_size=16", tiny_cache=tiny_cache)
    single = run_folders(project)[0]
    torchrun(project, *settings, "training.batch_size=8", tiny_cache=tiny_cache)
    ddp = next(f for f in run_folders(project) if f != single)
    assert_close_runs(single, ddp)
    a, b = (json.loads((r / "metrics.json").read_text())["calibration"] for r in (single, ddp))
    assert a["method"] == b["method"] == "thresholds"
    assert list(b["thresholds"].values()) == pytest.approx(list(a["thresholds"].values()), abs=1e-4)
