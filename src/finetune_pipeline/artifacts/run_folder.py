"""A run folder has one writer, and finished results in it are never overwritten.

- ``claim(run_dir)`` takes an exclusive lock on ``<run>/.lock`` (``flock``: released by the kernel
  when the process ends, even on ``kill -9``) and records the holder's PID for the message a second
  process gets;
- a new run needs an empty folder; ``resume=`` needs a stopped run (``train_state.pt``); a sweep
  job started again in its folder keeps, resumes or retries it only when the stored resolved config
  equals the new one (``config/differences``);
- ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml, as Hydra writes them) is written by the
  run itself once the folder is claimed, so a refused run leaves another run's record untouched.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from finetune_pipeline.artifacts.atomic import atomic_path
from finetune_pipeline.artifacts.names import CONFIG_DIR, LOCK_FILE, METRICS_FILE, STATE_FILE
from finetune_pipeline.errors import PipelineError, RunFolderRefused


@contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process; a second writer gets one line naming the holder's PID."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PipelineError(f"{run_dir}: output folder is not writable ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderRefused(
                f"{run_dir}: another process (PID {holder}) is writing to this run folder; "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def writer_of(run_dir: Path) -> str | None:
    """The PID of the process holding ``run_dir`` (a run still training), or None. Reads only: a
    read-only or lock-less folder is not being written."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def contents(run_dir: Path) -> list[str]:
    """What the folder holds, the lock file aside."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)


def require_empty(run_dir: Path) -> None:
    held = contents(run_dir)
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        finished = "a finished run" if METRICS_FILE in held else "earlier results"
        raise RunFolderRefused(
            f"{run_dir}: already holds {finished} ({shown}); a new run needs an empty folder: "
            "leave hydra.run.dir unset for a new one, or continue a stopped run with resume=<folder>"
        )


def require_stopped_run(run_dir: Path) -> None:
    if not (run_dir / STATE_FILE).is_file():
        finished = " (the run finished: metrics.json is there)" if (run_dir / METRICS_FILE).is_file() else ""
        raise RunFolderRefused(f"{run_dir}: no {STATE_FILE} to resume from{finished}")


def is_failed_attempt(run_dir: Path) -> bool:
    """Started (``.hydra/`` written) but neither finished nor resumable: a sweep job may start it over."""
    held = set(contents(run_dir))
    return CONFIG_DIR in held and METRICS_FILE not in held and STATE_FILE not in held


def write_config_record(run_dir: Path, task_cfg, hydra_cfg, overrides: list[str]) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra itself writes them."""
    for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", overrides)):
        with atomic_path(run_dir / CONFIG_DIR / name) as tmp:
            tmp.write_text(
                OmegaConf.to_yaml(OmegaConf.create(node) if isinstance(node, list) else node), encoding="utf-8"
            )
