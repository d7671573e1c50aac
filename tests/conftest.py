"""Shared fixtures: an isolated copy of the project's data, the real composed config, a tiny backbone.

End-to-end tests run ``python train.py`` with FINETUNE_PIPELINE_ROOT pointing at a temporary
project folder, so relative paths (data/, outputs/) resolve there and the repository stays clean.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from finetune_pipeline.config.load import register_resolvers, to_config
from finetune_pipeline.config.schema import Config, register_configs

REPO = Path(__file__).resolve().parents[1]
# per-machine decisions (precision=auto on a CPU) go to a temporary folder, not the user's cache
os.environ.setdefault("FINETUNE_PIPELINE_CACHE", tempfile.mkdtemp(prefix="finetune-pipeline-cache-"))
register_configs()
register_resolvers(datetime.datetime.now())


def compose_config(overrides: list[str] = ()) -> Config:
    """The real conf/ composed with overrides, typed and validated as train.py does."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One tiny-backbone cache for the whole session (built once per dataset)."""
    return tmp_path_factory.mktemp("tiny_backbones")


@pytest.fixture
def project(tmp_path) -> Path:
    """A temporary project root holding a copy of the shipped example data in data/raw."""
    shutil.copytree(REPO / "data" / "raw", tmp_path / "data" / "raw")
    return tmp_path


IN_PROCESS = ["backbone=tiny", "training.epochs=2", "data.max_length=32", "model.hidden_dim=16", "precision=fp32",
              "training.progress_bar=false"]


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


def run_train(project: Path, *overrides: str, tiny_cache: Path | None = None, check: bool = True,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """``python train.py backbone=tiny <overrides>`` with the temporary project as its root."""
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(REPO / "train.py"), "backbone=tiny", "training.progress_bar=false"]
    if tiny_cache is not None:
        args.append(f"backbone.path={tiny_cache}")
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m, before the overrides for argparse
    args = args[:2] + flags + args[2:] + [o for o in overrides if not o.startswith("-")]
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_folders(project: Path) -> list[Path]:
    return sorted(p.parent for p in (project / "outputs").rglob("metrics.json"))
