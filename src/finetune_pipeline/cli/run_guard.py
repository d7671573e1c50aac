"""Checks that must run before Hydra creates or writes any folder (a Hydra callback).

- ``resume=``: an empty value or a path that is not a run folder is refused in one line (Hydra
  would otherwise start a fresh run, or fail creating a folder over a file);
- the run or sweep folder must be creatable (a read-only parent is one line, not a traceback);
- a sweep into an existing sweep folder must be the same sweep: its ``multirun.yaml`` (overrides
  and base config) must equal the new one, how-keys aside, or the sweep is refused before Hydra
  replaces ``multirun.yaml``. Each job is then checked against its own stored config (``cli/train.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune_pipeline.artifacts.names import CONFIG_DIR
from finetune_pipeline.config.differences import HOW_KEYS, flatten
from finetune_pipeline.config.load import to_config
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.logs import formatter

log = logging.getLogger("finetune_pipeline.run_guard")


class RunGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(lambda: check_run(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(lambda: check_sweep(config))
        # a sweeper may open files in the sweep folder (Optuna's SQLite study) before Hydra makes it
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)


def check_run(config: DictConfig) -> None:
    resume = OmegaConf.select(config, "resume")
    if resume is not None:
        resume_folder(resume)
    else:  # a bad value is refused before a run folder exists (resume= checks the stored config later)
        to_config(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
    _creatable(Path(config.hydra.run.dir))


def resume_folder(resume: object) -> Path:
    """The run folder named by ``resume=``, or one line saying why it is not one."""
    text = str(resume).strip()
    if not text:
        raise PipelineError("resume= needs a run folder: resume=outputs/<date>/<time>")
    path = Path(text).expanduser()
    if not path.exists():
        raise PipelineError(f"resume={text}: no such folder")
    if not path.is_dir():
        raise PipelineError(f"resume={text}: is a file, not a run folder")
    if not (path / CONFIG_DIR / "config.yaml").is_file():
        raise PipelineError(f"{path.resolve()}: not a run folder (no .hydra/config.yaml to resume with)")
    return path.resolve()


def check_sweep(config: DictConfig) -> None:
    if OmegaConf.select(config, "resume") is not None:
        raise PipelineError(
            "resume= continues one run; to continue a sweep, run the same sweep command with "
            "hydra.sweep.dir=<its folder>"
        )
    sweep_dir = Path(config.hydra.sweep.dir)
    _creatable(sweep_dir)
    stored_path = sweep_dir / "multirun.yaml"
    if not stored_path.is_file():
        return
    try:
        stored = OmegaConf.load(stored_path)
        old_overrides = list(stored.hydra.overrides.task)
    except Exception as e:  # unreadable YAML or not a Hydra record
        raise PipelineError(
            f"{stored_path}: unreadable sweep record ({type(e).__name__}); choose another hydra.sweep.dir"
        ) from None
    differences = sweep_differences(old_overrides, list(config.hydra.overrides.task), _task(stored), _task(config))
    if differences:
        raise PipelineError(
            f"{sweep_dir} holds another sweep (differs in {'; '.join(differences[:5])}); its jobs' "
            "results belong to that sweep: choose another hydra.sweep.dir or leave it unset"
        )


def sweep_differences(old_overrides: list[str], new_overrides: list[str], old_task: dict, new_task: dict) -> list[str]:
    old, new = _override_map(old_overrides), _override_map(new_overrides)
    found = [
        f"{k}: {old.get(k, '(default)')} -> {new.get(k, '(default)')}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    old_leaves, new_leaves = flatten(old_task), flatten(new_task)
    found += [
        f"{k}: {old_leaves.get(k)} -> {new_leaves.get(k)}"
        for k in sorted(set(old_leaves) | set(new_leaves))
        if k not in HOW_KEYS and k not in old and k not in new and old_leaves.get(k) != new_leaves.get(k)
    ]
    return found


def _override_map(overrides: list[str]) -> dict[str, str]:
    """key -> value text of command-line overrides, how-keys aside (parsed by Hydra's own parser)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {
        o.key_or_group: o.input_line.split("=", 1)[1] if "=" in o.input_line else ""
        for o in parsed
        if o.key_or_group not in HOW_KEYS
    }


def _task(config: DictConfig) -> dict:
    return {
        k: OmegaConf.to_container(config[k], resolve=False) if OmegaConf.is_config(config[k]) else config[k]
        for k in config
        if k != "hydra"
    }


def _creatable(folder: Path) -> None:
    """Hydra will create ``folder``: its nearest existing ancestor must be a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder and folder.is_dir():
        return
    if not existing.is_dir():
        raise PipelineError(f"{folder}: cannot create the output folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PipelineError(f"{folder}: cannot create the output folder ({existing} is not writable)")


def _exit_on_error(check: Callable[[], None]) -> None:
    try:
        check()
    except PipelineError as e:
        if not log.handlers:  # Hydra has not set up the job's logging yet: one line on stderr, our format
            handler = _Stderr()
            handler.setFormatter(formatter())
            log.addHandler(handler)
            log.propagate = False
        log.error("%s", e)
        sys.exit(getattr(e, "exit_code", 1))


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time of the message."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass
