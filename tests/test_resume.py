"""Nothing lost: an interrupted run resumes to exactly the result of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from finetune_pipeline.artifacts.names import STATE_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.signals import Interrupted
from helpers import REPO, Killed, run_folders


@pytest.fixture
def run(stoppable):
    def start(name, *overrides, **how):
        return stoppable(name, "training.epochs=3", *overrides, **how)

    return start


def outcome(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [{k: v for k, v in h.items() if "second" not in k} for h in metrics["history"]]
    weights = {
        name: torch.load(run_dir / name, weights_only=True)["state_dict"]
        for name in ("best_model.pt", "final_model.pt")
    }
    return metrics["summary"], history, weights


def assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1]  # exact: CPU fp32 redoes the very same operations
    for name in a[2]:
        assert a[2][name].keys() == b[2][name].keys()
        assert all(torch.equal(a[2][name][k], b[2][name][k]) for k in a[2][name]), name


PATHS = {
    "cached head": [],
    "fine-tuning, accumulation 2": ["training.freeze_backbone=false", "training.gradient_accumulation_steps=2"],
    "LoRA": ["adapter=lora", "training.epochs=2"],
    "top layers": ["adapter=top_layers", "adapter.top_layers.layers=1", "training.epochs=2"],
}
# the state is saved at the optimizer step after batch 5: with accumulation 2 that is after batch 6
STOPS_AFTER = {"cached head": 5, "fine-tuning, accumulation 2": 6, "LoRA": 5, "top layers": 5}


SLOW_PATHS = {"LoRA", "top layers"}  # fast equivalent: test_adapter_states_hold_what_trains_and_restore_it


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_PATHS else p for p in PATHS], ids=list(PATHS)
)
def test_sigint_mid_epoch_then_resume_equals_an_uninterrupted_run(run, project, path):
    run("whole", *PATHS[path])
    with pytest.raises(Interrupted) as stopped:
        run("split", *PATHS[path], stop_at=("epoch=2 step=5/", "SIGINT"))
    assert stopped.value.exit_code == 130
    folder = project / "runs" / "split"
    assert (folder / STATE_FILE).is_file() and not (folder / "metrics.json").exists()
    run("split", *PATHS[path], resume=True)
    log = (folder / "train.log").read_text()
    assert f"resuming at epoch 2, batch {STOPS_AFTER[path]}/16" in log
    assert_same(outcome(project / "runs" / "whole"), outcome(folder))
    assert not (folder / STATE_FILE).exists()  # finished: nothing left to resume


def test_after_kill_9_resume_loses_only_the_steps_since_the_last_save(run, project):
    run("whole", "training.freeze_backbone=false")
    with pytest.raises(Killed):  # dies at batch 10 of epoch 2; the last save was after batch 8
        run(
            "killed",
            "training.freeze_backbone=false",
            "training.save_every_steps=4",
            stop_at=("epoch=2 step=10/", "kill -9"),
        )
    run("killed", "training.freeze_backbone=false", "training.save_every_steps=4", resume=True)
    assert "resuming at epoch 2, batch 8/16" in (project / "runs" / "killed" / "train.log").read_text()
    assert_same(outcome(project / "runs" / "whole"), outcome(project / "runs" / "killed"))


@pytest.mark.parametrize(
    "signal_at, resumes_at",
    [
        ("epoch=1 step=16/", "epoch 1, batch 16/16"),  # at the last batch: validation is still to do
        ("epoch 1/3:", "epoch 2, batch 0/16"),  # during validation: saved at the epoch end
    ],
)
def test_an_interrupt_at_an_epoch_end_resumes_there(run, project, signal_at, resumes_at):
    run("whole")
    with pytest.raises(Interrupted):
        run("split", stop_at=(signal_at, "SIGINT"))
    run("split", resume=True)
    assert f"resuming at {resumes_at}" in (project / "runs" / "split" / "train.log").read_text()
    assert_same(outcome(project / "runs" / "whole"), outcome(project / "runs" / "split"))


def test_resume_refuses_changed_data_and_a_finished_run(run, project):
    with pytest.raises(Interrupted):
        run("split", stop_at=("epoch=1 step=5/", "SIGINT"))
    raw = project / "data" / "raw" / "part-3.jsonl"
    raw.write_text(raw.read_text() + json.dumps({"input": "one more headline", "output": "sport"}) + "\n")
    with pytest.raises(PipelineError, match="the data changed since this run started"):
        run("split", resume=True)
    run("done")
    with pytest.raises(PipelineError, match=r"no train_state.pt to resume from \(the run finished"):
        run("done", resume=True)


@pytest.mark.slow
def test_sigterm_and_kill_9_through_train_py_then_resume(project, tiny_cache):
    """The real command line: SIGTERM exits 143 printing the resume command; kill -9 loses little."""
    args = [
        "training.freeze_backbone=false",
        "training.epochs=30",
        "training.save_every_steps=1",
        "data.max_length=32",
        "model.hidden_dim=16",
        "precision=fp32",
        f"backbone.path={tiny_cache}",
    ]
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "train.py"), "backbone=tiny", "training.progress_bar=false", *args]
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = wait_for(lambda: next((project / "outputs").rglob(STATE_FILE), None))
    run_dir = state.parent
    stored_config = (run_dir / ".hydra" / "config.yaml").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    resume = [sys.executable, str(REPO / "train.py"), f"resume={run_dir}"]
    proc = subprocess.Popen(resume, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(
        lambda: (
            "resuming at epoch" in (run_dir / "train.log").read_text()
            and (run_dir / "train.log").read_text().count("training state saved") >= 3
        )
    )
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM; training state saved in" in out and f"resume={run_dir.relative_to(project)}" in out
    assert "Traceback" not in out

    finished = subprocess.run(
        [*resume, "training.log_every_steps=50"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == stored_config  # the stored config is kept
    assert (run_dir / "metrics.json").is_file() and not (run_dir / STATE_FILE).exists()
    assert len(json.loads((run_dir / "metrics.json").read_text())["history"]) == 30
    assert len(run_folders(project)) == 1  # no new run folder


@pytest.mark.slow
def test_a_sweep_job_started_again_in_its_folder_resumes(project, tiny_cache):
    """What a SLURM requeue does: the same job, same folder, after a SIGTERM saved its state."""
    sweep = project / "sweep"
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "backbone=tiny",
        "training.progress_bar=false",
        f"backbone.path={tiny_cache}",
        f"hydra.sweep.dir={sweep}",
        "training.freeze_backbone=false",
        "training.epochs=10",
        "training.save_every_steps=1",
        "data.max_length=32",
        "model.hidden_dim=16,17",
    ]
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = sweep / "0"
    wait_for(lambda: (job / STATE_FILE).is_file() and "epoch 2/10" in (job / "train.log").read_text())
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143 and "stopped by SIGTERM" in out, out[-2000:]
    assert "run the same command with hydra.sweep.dir=sweep" in out
    assert json.loads((job / "failed.json").read_text())["type"] == "Interrupted"

    again = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:]
    assert "resuming at epoch" in (job / "train.log").read_text()
    assert (job / "metrics.json").is_file() and not (job / "failed.json").exists()
    assert len(json.loads((job / "metrics.json").read_text())["history"]) == 10
    assert (sweep / "1" / "metrics.json").is_file() and "ok" in (sweep / "summary.md").read_text()

    finished = {j: (sweep / j / "metrics.json").stat().st_mtime_ns for j in ("0", "1")}
    third = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count("had finished with the same config; keeping its results") == 2
    assert {j: (sweep / j / "metrics.json").stat().st_mtime_ns for j in ("0", "1")} == finished


def test_resume_takes_no_other_overrides_and_needs_a_run_folder(tmp_path):
    from finetune_pipeline.config.load import stored_config

    with pytest.raises(PipelineError, match=r"drop the other overrides \['training.epochs=5'\]"):
        stored_config(tmp_path, [f"resume={tmp_path}", "training.epochs=5", "training.device=cpu"])
    with pytest.raises(PipelineError, match=f"{tmp_path}: not a run folder \\(no .hydra/config.yaml"):
        stored_config(tmp_path, [f"resume={tmp_path}", "training.device=cpu"])


def wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_state_from_another_number_of_processes_is_refused(tmp_path):
    import numpy as np

    from finetune_pipeline.data.split import Split
    from finetune_pipeline.training.state import data_identity, restore

    split = Split(np.array([0, 1]), np.array([2]), np.array([3]))
    saved = {"data": data_identity("abc", split, processes=2)}
    with pytest.raises(PipelineError, match=r"trained by 2 process\(es\), not 1; resume it with the same torchrun"):
        restore(saved, trainer=None, data=data_identity("abc", split), path=tmp_path / STATE_FILE)


def test_adapter_states_hold_what_trains_and_restore_it():
    """What resume relies on for adapter=lora / top_layers, without training: the state holds the head and
    exactly the encoder tensors that train, and loading it into a fresh model gives those tensors back."""
    from transformers import BertConfig, BertModel

    from finetune_pipeline.model.adapters import LoraSpec, add_lora
    from finetune_pipeline.model.classifier import HeadConfig, TextClassifier
    from finetune_pipeline.model.top_layers import freeze_all_but_top
    from finetune_pipeline.training.state import trainable_state

    def model(kind):
        torch.manual_seed(0)
        encoder = BertModel(
            BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
        )
        if kind == "lora":
            encoder = add_lora(encoder, LoraSpec(4, 8, 0.0, ("query", "value")))
        else:
            freeze_all_but_top(encoder, 1)
        return TextClassifier(encoder, HeadConfig(16, 8, 3, "mean"), frozen=False)

    for kind in ("lora", "top"):
        trained = model(kind)
        with torch.no_grad():
            for p in trained.parameters():
                if p.requires_grad:
                    p.add_(0.5)  # as if trained
        state = trainable_state(trained)
        wanted = {f"encoder.{n}" for n, p in trained.encoder.named_parameters() if p.requires_grad}
        assert {k for k in state if k.startswith("encoder.")} == wanted and wanted
        assert any(k.startswith("head.") for k in state)
        fresh = model(kind)
        missing, unexpected = fresh.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("encoder.") for k in missing)
        for name, t in fresh.state_dict().items():
            assert torch.equal(t, trained.state_dict()[name]), name
