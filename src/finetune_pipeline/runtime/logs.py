"""The log format, defined once: console, ``train.log`` and Hydra's job logging (conf/hydra/job_logging)."""

from __future__ import annotations

import logging
from pathlib import Path

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"
DATE_FORMAT = "%H:%M:%S"


def formatter() -> logging.Formatter:
    """Also the factory Hydra's job-logging config names (``(): ...formatter``)."""
    return logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)


def log_to_file(path: Path) -> logging.Handler:
    """Add a file handler to the root logger (at INFO at least); the caller removes it when done."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def log_to_stderr() -> None:
    """Console logging for the commands that are not Hydra apps."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=DATE_FORMAT)
