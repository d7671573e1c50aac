"""`python train.py` as a user runs it (tiny backbone, offline), asserting on what it produced."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.precision import cpu_supports_bf16
from helpers import REPO, processed_folder, run_folders, run_train

ARTIFACTS = [
    "best_model.pt",
    "final_model.pt",
    "classifier_head.pt",
    "label_to_id.json",
    "id_to_label.json",
    "metrics.json",
    "freeze_proof.json",
    "tokenizer",
    "train.log",
    ".hydra",
    "data_report.json",
    "data_report.md",
    "data_report.png",
]
FAST = ["training.epochs=2", "data.max_length=32", "model.hidden_dim=32"]

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")


@pytest.mark.parametrize(
    "frozen, precision, via",
    [
        (True, "fp32", "train.py"),
        (False, "fp32", "train()"),
        pytest.param(True, "bf16", "train()", marks=needs_bf16),
        pytest.param(False, "bf16", "train()", marks=needs_bf16),
    ],
)
def test_run_writes_every_artifact(project, tiny_cache, in_project, frozen, precision, via):
    overrides = [f"training.freeze_backbone={str(frozen).lower()}", f"precision={precision}", *FAST]
    if via == "train.py":
        run_train(project, *overrides, tiny_cache=tiny_cache)
        [run] = run_folders(project)
    else:  # in this process (no start-up cost); .hydra/ is the command line's record
        _, run, _ = in_project("run", *overrides)
    assert all((run / name).exists() for name in ARTIFACTS if via == "train.py" or name != ".hydra")

    # the data report, with the keys other tools read
    report = json.loads((run / "data_report.json").read_text())
    assert (
        sum(report["classes"]["train"].values())
        + sum(report["classes"]["test"].values())
        + sum(report["classes"]["val"].values())
        == report["records"]
        == 320
    )
    assert report["leakage"]["cross_split"]["count"] == 0 and report["conflicts"]["count"] == 0
    assert report["lengths"]["truncated_share"] >= 0 and report["split"] == "stratified"
    assert json.loads((run / "metrics.json").read_text())["data"]["split"] == "stratified"
    # label maps round-trip against the preprocessed mapping
    label_to_id = json.loads((run / "label_to_id.json").read_text())
    id_to_label = json.loads((run / "id_to_label.json").read_text())
    mapping = json.loads((processed_folder(project) / "output_to_symbol.json").read_text(encoding="utf-8"))
    assert sorted(label_to_id.values()) == list(range(len(mapping)))
    for i, entry in id_to_label.items():
        assert label_to_id[entry["symbol"]] == int(i) and mapping[entry["label"]] == entry["symbol"]

    # checkpoints: plain tensors and strings, loadable with weights_only, head consistent with best_model
    best_ckpt = torch.load(run / "best_model.pt", weights_only=True)
    best, final = best_ckpt["state_dict"], torch.load(run / "final_model.pt", weights_only=True)["state_dict"]
    head = torch.load(run / "classifier_head.pt", weights_only=True)
    assert best.keys() == final.keys()
    assert {f"head.{k}" for k in head} == {k for k in best if k.startswith("head.")}
    assert all(torch.equal(head[k], best[f"head.{k}"]) for k in head)
    assert head["4.weight"].shape == (len(mapping), 32)  # last Linear: classes x hidden_dim

    proof = FreezeProof.read(run)
    assert proof.freeze_backbone is frozen
    assert best_ckpt["backbone"]["sha256"] == proof.encoder_sha256_before
    if frozen:
        assert proof.status == "pass" and proof.encoder_unchanged
        assert proof.encoder_sha256_before == proof.encoder_sha256_after
        assert proof.trainable_parameters["encoder"] == 0
        assert best_ckpt["kind"] == "head_only" and not any(k.startswith("encoder.") for k in final)
        assert (run / "best_model.pt").stat().st_size < 1_000_000  # lean: no encoder copy
    else:
        assert best_ckpt["kind"] == "full" and any(k.startswith("encoder.") for k in best)
        assert proof.status == "not_frozen" and proof.tensors_changed
        assert proof.trainable_parameters["encoder"] == proof.trainable_parameters["encoder_total"] > 0

    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for key in ("train/loss", "val/loss", "val/accuracy", "val/macro_f1", "opt_steps"):
        assert key in metrics["history"][0]
    assert metrics["best"]["metric"] == "val/macro_f1" and metrics["best"]["epoch"] in (1, 2)
    assert 0 <= metrics["test"]["test/accuracy"] <= 1 and "per_class" in metrics["test"]
    assert {(label, c["symbol"]) for label, c in metrics["test"]["per_class"].items()} == {
        (e["label"], e["symbol"]) for e in id_to_label.values()
    }
    assert metrics["precision"] == precision and metrics["backbone"]["pretrained"] is False
    assert metrics["timings"]["train_seconds"] > 0

    log = (run / "train.log").read_text()
    assert re.search(r"epoch=1 step=5/\d+ batch_loss=[\d.]+ .*lr\[head\]=\S+ .*opt_steps=5", log), log[:2000]
    assert ("lr[encoder]=" in log) is not frozen
    assert "NOT pretrained" in log and "freeze proof:" in log
    assert metrics["features"]["cache"] == ("miss" if frozen else "off")  # the record, not the log

    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    assert tok("hello world")["input_ids"][0] == tok.bos_token_id


def test_learnable_dataset_clearly_beats_chance(in_project):
    _, run, _ = in_project(
        "learn",
        "training.freeze_backbone=false",
        "precision=fp32",
        "training.epochs=4",
        "training.encoder_learning_rate=1e-3",
        "training.learning_rate=3e-3",
        "data.max_length=64",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    classes = len(json.loads((run / "label_to_id.json").read_text()))
    assert classes == 5
    assert metrics["test"]["test/accuracy"] >= 0.8  # chance is 1/5


@pytest.mark.slow
def test_freeze_proof_readme_command_checks_runs_independently(in_project):
    doc = (REPO / "README_FREEZE_PROOF.md").read_text()
    script = re.search(r"<<'EOF'\n(.*?)\nEOF\n", doc, re.S).group(1)
    _, lean, _ = in_project("lean", "training.freeze_backbone=true")
    _, full, _ = in_project("full", "training.freeze_backbone=true", "training.full_checkpoints=true")
    _, tuned, _ = in_project("tuned", "training.freeze_backbone=false")

    def check(run):
        return subprocess.run([sys.executable, "-", str(run)], input=script, capture_output=True, text=True)

    proof = FreezeProof.read(lean)
    ok = check(lean)
    assert ok.returncode == 0, ok.stderr
    assert f"base model's encoder sha256 now: {proof.encoder_sha256_before} (same)" in ok.stdout
    ok_full = check(full)
    assert ok_full.returncode == 0, ok_full.stderr
    assert f"full checkpoint: 0 of {proof.tensors_total} encoder tensors differ" in ok_full.stdout
    assert f"encoder sha256 in best_model.pt: {proof.encoder_sha256_before}" in ok_full.stdout
    bad = check(tuned)
    assert bad.returncode == 1 and "full checkpoint: 0 of" not in bad.stdout

    # a head-only checkpoint whose recorded backbone is not the one on disk fails the check
    ckpt = torch.load(lean / "best_model.pt", weights_only=True)
    ckpt["backbone"]["sha256"] = "0" * 64
    torch.save(ckpt, lean / "best_model.pt")
    assert check(lean).returncode == 1


@pytest.mark.slow
def test_multirun_puts_each_job_in_its_own_folder(project, tiny_cache):
    run_train(project, "-m", "model.hidden_dim=8,16", *FAST[:2], tiny_cache=tiny_cache)
    runs = run_folders(project)
    assert len(runs) == 2 and all("multirun" in str(r) for r in runs)
    assert (runs[0].parent / "multirun.yaml").is_file()
    dims = sorted(torch.load(r / "classifier_head.pt", weights_only=True)["1.weight"].shape[0] for r in runs)
    assert dims == [8, 16]
    records = [json.loads((r / "metrics.json").read_text())["features"]["cache"] for r in runs]
    proofs = [json.loads((r / "freeze_proof.json").read_text())["how"] for r in runs]
    assert records == ["miss", "hit"] and "encoder not loaded" in proofs[1]  # the second job never loads it
    assert [(r / ".hydra" / "overrides.yaml").read_text().count("model.hidden_dim") for r in runs] == [1, 1]


@pytest.mark.slow
def test_runs_started_together_get_separate_folders(project, tiny_cache):
    # preprocess and build the tiny backbone first, so both runs only race for their run folder
    run_train(project, "training.epochs=1", "data.max_length=16", tiny_cache=tiny_cache)
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project)}
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "backbone=tiny",
        f"backbone.path={tiny_cache}",
        "training.epochs=1",
        "data.max_length=16",
    ]
    procs = [
        subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert len(run_folders(project)) == 3


def test_raw_data_change_triggers_preprocessing(project, in_project):
    _, _, first = in_project("first", "training.epochs=1")
    assert "preprocessing data/raw" in first
    _, _, second = in_project("second", "training.epochs=1")
    assert "combined dataset is up to date" in second
    extra = [{"input": f"Extra sports headline number {i}", "output": "sport"} for i in range(5)]
    (project / "data/raw/part-9.json").write_text(json.dumps(extra))
    _, _, third = in_project("third", "training.epochs=1")
    assert "changed since the last preprocessing" in third
    meta = json.loads((processed_folder(project) / "preprocess_meta.json").read_text())
    assert "part-9.json" in meta["raw_files"]


def test_bad_raw_file_fails_in_one_line_without_outputs(project, in_project):
    # in-process (train.py's exit status 1 and one-line output for any PipelineError: test_config.py)
    (project / "data/raw/part-9.json").write_text('[{"input": "text", "output": 3}]')
    with pytest.raises(
        PipelineError, match=r'part-9\.json: record 1: field "output" must be a string or a list of strings, got int'
    ) as e:
        in_project("bad")
    assert "\n" not in str(e.value)
    assert not (project / "data/processed").exists() or not any((project / "data/processed").iterdir())
    assert not list(project.rglob("*.pt"))


def test_missing_mmbert_offline_says_how_to_get_it(project):
    """The default command (mmBERT-base, tracked in MLflow) without the weights, offline: one line that
    names what works offline, and nothing left behind: no run folder, no tracker run (``-X importtime``
    lists every module the run imported up to the error: no tracker was even imported)."""
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "train.py")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    [error] = [line for line in proc.stdout.splitlines() if "ERROR" in line]  # one line, nothing else
    assert "base_models/mmBERT-base: no model weights" in error
    assert "hf download jhu-clsp/mmBERT-base --local-dir" in error
    assert "`python train.py backbone=tiny`" in error and "backbone=local backbone.path=DIR" in error
    outputs = project / "outputs"
    assert not outputs.exists() or not list(outputs.iterdir()), list(outputs.rglob("*"))  # no run, no mlflow.db
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" in imported and not {m.split(".")[0] for m in imported} & {"mlflow", "tensorboard", "wandb"}
