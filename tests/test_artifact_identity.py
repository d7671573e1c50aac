"""Checkpoints prove what they were trained for: a label set, a tokenizer, a backbone's weights and
config.json. Used with anything else they are refused in one line naming the file, and nothing is
written (byte snapshots of the run folder before and after)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from finetune_pipeline import Classifier
from finetune_pipeline.artifacts.checkpoints import load_checkpoint
from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.errors import PipelineError


@pytest.fixture(scope="module")
def runs(module_project):
    project, train_run = module_project
    return project, train_run("frozen"), train_run("fine-tuned", "training.freeze_backbone=false")


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("export*", "*.lock"))
    return target


def test_a_checkpoint_records_its_label_set_tokenizer_backbone_config_and_precision(runs):
    _, run, _ = runs
    ckpt = load_checkpoint(run / "best_model.pt")
    classes = json.loads((run / "id_to_label.json").read_text())
    assert ckpt["classes"]["symbols"] == [c["symbol"] for c in classes.values()]
    assert ckpt["classes"]["labels"] == [c["label"] for c in classes.values()]
    assert len(ckpt["classes"]["sha256"]) == 64 and len(ckpt["tokenizer_sha256"]) == 64
    assert len(ckpt["backbone"]["config_sha256"]) == 64 and ckpt["precision"] == "fp32"


@pytest.mark.parametrize("which", ["frozen", "fine-tuned"])
def test_a_checkpoint_from_a_run_with_other_labels_is_refused(runs, tmp_path, caplog, which):
    _, frozen, tuned = runs
    run = copy_run(frozen if which == "frozen" else tuned, tmp_path)
    classes = json.loads((run / "id_to_label.json").read_text())
    classes["0"]["label"], classes["1"]["label"] = "zz_culture", "zz_other"  # the run the checkpoint came from...
    (run / "id_to_label.json").write_text(json.dumps(classes))  # ...had other labels: best_model.pt copied in
    texts = tmp_path / "held.jsonl"
    texts.write_text(json.dumps({"input": "football team won the final", "output": "zz_culture"}) + "\n")
    before = snapshot(run)
    assert main(["evaluate", str(run), "--input", str(texts)]) == 1
    assert main(["predict", str(run), "--input", str(texts)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all("best_model.pt: trained for another label set" in e for e in errors)
    assert "class 0:" in errors[0] and "zz_culture" in errors[0] and "\n" not in errors[0]
    assert snapshot(run) == before


def test_a_backbone_whose_config_changed_is_refused_even_with_the_same_weights(runs, tmp_path):
    _, run, _ = runs
    folder = tmp_path / "backbone"
    shutil.copytree(json.loads((run / "metrics.json").read_text())["backbone"]["path"], folder)  # the encoder it used
    config = json.loads((folder / "config.json").read_text())
    Classifier.from_run(run, backbone_path=folder, device="cpu", precision="fp32")  # a byte copy is the same backbone
    config["norm_eps"] = 1e-2  # weights untouched: predictions would change silently
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PipelineError, match=r"config.json: differs from the config best_model.pt was trained with"):
        Classifier.from_run(run, backbone_path=folder, device="cpu", precision="fp32")


def test_a_changed_tokenizer_is_refused(runs, tmp_path):
    _, _, tuned = runs
    run = copy_run(tuned, tmp_path)
    tokenizer = run / "tokenizer" / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["model"]["vocab"] = dict(reversed(list(data["model"]["vocab"].items())))  # other ids for the same tokens
    tokenizer.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=r"tokenizer: differs from the tokenizer best_model.pt was trained with"):
        Classifier.from_run(run, device="cpu", precision="fp32")


def test_checkpoints_from_before_these_records_still_load(runs, tmp_path):
    _, _, tuned = runs
    run = copy_run(tuned, tmp_path)
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    for key in ("classes", "tokenizer_sha256", "precision"):
        del ckpt[key]
    del ckpt["backbone"]["config_sha256"]
    torch.save(ckpt, run / "best_model.pt")
    old = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(["Stocks fell"])
    new = Classifier.from_run(tuned, device="cpu", precision="fp32").probabilities(["Stocks fell"])
    assert (old == new).all()


def test_using_a_run_that_is_still_training_says_so(runs, caplog):
    import multiprocessing

    _, run, _ = runs
    lock = run / ".lock"
    assert lock.is_file()
    Classifier.from_run(run, device="cpu", precision="fp32")
    assert "still being trained" not in caplog.text
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(run, ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        Classifier.from_run(run, device="cpu", precision="fp32")
        assert f"still being trained (PID {holder.pid})" in caplog.text
    finally:
        done.set()
        holder.join(30)


def _hold(run, ready, done):
    from finetune_pipeline.artifacts.run_folder import claim

    with claim(run):
        ready.set()
        done.wait(60)


def test_a_full_disk_during_an_export_is_one_line_and_leaves_nothing(runs, tmp_path, caplog, monkeypatch):
    import safetensors.torch

    _, run, _ = runs

    def full_disk(*args, **kwargs):  # what safetensors raises when the disk fills (measured on a 700 KB tmpfs)
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{out}: cannot write (No space left on device); nothing was replaced"]
    assert list(tmp_path.iterdir()) == []
