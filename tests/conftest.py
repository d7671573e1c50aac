"""Fixtures only (helpers the tests import live in helpers.py): an isolated copy of the project's
data, a tiny-backbone cache, in-process runs.

End-to-end tests run ``python train.py`` with FINETUNE_PIPELINE_ROOT pointing at a temporary
project folder, so relative paths (data/, outputs/) resolve there and the repository stays clean.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from helpers import IN_PROCESS, REPO, StopAt, compose_config


def pytest_configure(config):
    """Under pytest-xdist the cores are shared out among the workers: one thread each (tiny models;
    the variable reaches the runs the tests start in subprocesses)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# the test files of most seconds (--durations, 2 cores), started first: pytest-xdist hands files out in
# this order (--dist loadfile), so the last ones to run are short and both workers finish together
LONGEST_FIRST = (
    "test_tracking.py",
    "test_serve.py",
    "test_end_to_end.py",
    "test_resume.py",
    "test_feature_cache.py",
    "test_multilabel.py",
    "test_export_interop.py",
    "test_data_formats.py",
    "test_reproducibility.py",
    "test_export.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One tiny-backbone cache for the whole session (built once per dataset)."""
    return tmp_path_factory.mktemp("tiny_backbones")


@pytest.fixture
def project(tmp_path) -> Path:
    """A temporary project root holding a copy of the shipped example data in data/raw."""
    shutil.copytree(REPO / "data" / "raw", tmp_path / "data" / "raw")
    return tmp_path


@pytest.fixture(scope="module")
def module_project(tmp_path_factory):
    """(project, ``train_run(name, *overrides) -> run folder``): tiny runs that a test module trains
    once and shares, in a project of their own."""
    from finetune_pipeline.training.recipe import train

    project = tmp_path_factory.mktemp("module_project")
    shutil.copytree(REPO / "data" / "raw", project / "data" / "raw")

    def train_run(name: str, *overrides: str) -> Path:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
            run = project / "runs" / name
            train(compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}", *overrides]), run)
        return run

    return project, train_run


@pytest.fixture
def in_project(project, tiny_cache, monkeypatch):
    """``run(name, *overrides)``: train() in this process on the temporary project (no start-up cost)."""
    from finetune_pipeline.training.recipe import train

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(name, *overrides):
        cfg = compose_config([*IN_PROCESS, f"backbone.path={tiny_cache}", *overrides])
        run_dir = project / "runs" / name
        summary = train(cfg, run_dir)
        return summary, run_dir, (run_dir / "train.log").read_text()

    return run


@pytest.fixture
def stoppable(project, tiny_cache, monkeypatch):
    """``start(name, *overrides, resume=False, stop_at=None)``: train() in this process on the
    temporary project; ``stop_at=(log line, "SIGINT" | "kill -9")`` stops it when the log shows that line."""
    from finetune_pipeline.training.recipe import train

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def start(name, *overrides, resume=False, stop_at=None):
        cfg = compose_config([*IN_PROCESS, f"backbone.path={tiny_cache}", *overrides])
        handler = StopAt(*stop_at) if stop_at else None
        if handler:
            logging.getLogger().addHandler(handler)
        try:
            return train(cfg, project / "runs" / name, resume=resume)
        finally:
            if handler:
                logging.getLogger().removeHandler(handler)

    return start
