"""Where the project lives, so relative paths in the config mean the same from any directory."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "FINETUNE_PIPELINE_ROOT"  # overrides the discovered project root


def project_root() -> Path:
    """The folder holding ``conf/`` and ``train.py``.

    An editable install (``pip install -e .``) keeps the package in ``<root>/src``; otherwise the
    root is searched upwards from the working directory.
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "conf" / "config.yaml").is_file():
        return here
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    raise RuntimeError(f"cannot find the project root (a folder with conf/config.yaml); set {ROOT_ENV}")


def resolve_path(path: str | os.PathLike) -> Path:
    """Absolute paths stay; relative ones are taken from the project root, not the working dir."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def conf_dir() -> Path:
    """The Hydra config folder: the project root's ``conf/``, or this checkout's when the root (set by
    FINETUNE_PIPELINE_ROOT) holds only data."""
    own = project_root() / "conf"
    return own if (own / "config.yaml").is_file() else Path(__file__).resolve().parents[2] / "conf"
