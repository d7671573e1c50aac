"""finetune_pipeline.train([...]): train.py's run from Python, with the same record and checks."""

from __future__ import annotations

import pytest
import yaml

import finetune_pipeline
from finetune_pipeline.errors import ConfigError, PipelineError
from finetune_pipeline.sweep.jobs import read_job
from helpers import IN_PROCESS


def test_train_from_python_makes_the_run_train_py_would(project, tiny_cache, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    overrides = [*IN_PROCESS, f"backbone.path={tiny_cache}", "training.epochs=1", "logger=none"]
    run = finetune_pipeline.train(overrides)
    assert run.folder.parent.parent == project / "outputs"  # outputs/<date>/<time>, as hydra.run.dir says
    assert run.metrics.summary["test/accuracy"] == read_job(run.folder).test_accuracy
    assert yaml.safe_load((run.folder / ".hydra" / "overrides.yaml").read_text()) == overrides
    assert yaml.safe_load((run.folder / ".hydra" / "config.yaml").read_text())["training"]["epochs"] == 1
    clf = finetune_pipeline.Classifier.from_run(run.folder, precision="fp32")
    assert clf.predict(["Central bank raises rates"])[0]["label"] in clf.labels


def test_a_bad_override_raises_before_any_folder_is_made(project, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    with pytest.raises(ConfigError, match=r"training\.epoch is not a config key \(did you mean training\.epochs\?\)"):
        finetune_pipeline.train(["training.epoch=3"])
    with pytest.raises(ConfigError, match=r"backbone\.path has no value"):
        finetune_pipeline.train(["backbone=local"])
    assert not (project / "outputs").exists()
    with pytest.raises(PipelineError, match="no model weights"):  # fails before any artifact: no folder kept
        finetune_pipeline.train(["backbone=local", f"backbone.path={project / 'nothing'}", "logger=none"])
    assert not [p for p in (project / "outputs").rglob("*") if p.is_dir()]
    with pytest.raises(PipelineError, match=r"overrides is a list of strings, e.g. train\(\['backbone=tiny'\]\)"):
        finetune_pipeline.train("backbone=tiny")
