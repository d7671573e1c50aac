"""Helpers the tests import (conftest.py holds fixtures only): the real composed config, the command
line of ``train.py`` on a temporary project, records written as a finished run writes them."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from finetune_pipeline.artifacts.metrics_record import BestEpoch, RunMetrics
from finetune_pipeline.config.load import register_resolvers, to_config
from finetune_pipeline.config.schema import Config, register_configs

REPO = Path(__file__).resolve().parents[1]
# per-machine decisions (precision=auto on a CPU) go to a temporary folder, not the user's cache
os.environ.setdefault("FINETUNE_PIPELINE_CACHE", tempfile.mkdtemp(prefix="finetune-pipeline-cache-"))
register_configs()
register_resolvers(datetime.datetime.now())


def compose_config(overrides: list[str] = ()) -> Config:
    """The real conf/ composed with overrides, typed and validated as train.py does; no tracker
    unless the overrides choose one (tests of tracking do; the others need not pay for it)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=with_logger(overrides)))


def with_logger(overrides) -> list[str]:
    """``overrides`` plus ``logger=none`` when they choose no logger."""
    overrides = list(overrides)
    return overrides if any(o.lstrip("+~").startswith("logger") for o in overrides) else [*overrides, "logger=none"]


def processed_folder(project: Path) -> Path:
    """The one source's processed folder, <project>/data/processed/<name>-<hash>/."""
    folders = [p for p in (project / "data" / "processed").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


IN_PROCESS = [
    "backbone=tiny",
    "training.epochs=2",
    "data.max_length=32",
    "model.hidden_dim=16",
    "precision=fp32",
    "training.progress_bar=false",
    "training.log_every_seconds=0",  # every step line in the log: tests stop runs at given steps
]


def run_train(
    project: Path, *overrides: str, tiny_cache: Path | None = None, check: bool = True, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``python train.py backbone=tiny <overrides>`` with the temporary project as its root."""
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "backbone=tiny",
        "training.progress_bar=false",
        "training.log_every_seconds=0",
    ]
    if tiny_cache is not None:
        args.append(f"backbone.path={tiny_cache}")
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m, before the overrides for argparse
    args = args[:2] + flags + args[2:] + with_logger(o for o in overrides if not o.startswith("-"))
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_folders(project: Path) -> list[Path]:
    """The run folders under outputs/ (not MLflow's copies of their files in outputs/mlartifacts/)."""
    return sorted(p.parent for p in (project / "outputs").rglob("metrics.json") if "mlartifacts" not in p.parts)


def write_run_metrics(folder: Path, best: float, test_acc: float, seconds: float = 3.5) -> None:
    """A metrics.json as a finished run writes it, with the given headline numbers."""
    RunMetrics(
        summary={},
        history=[],
        best=BestEpoch("val/macro_f1", best, 2),
        test={"test/loss": 0.5, "test/accuracy": test_acc, "test/macro_f1": test_acc - 0.01},
        data={},
        backbone={},
        features={},
        loss={},
        device="cpu",
        processes=1,
        precision="fp32",
        timings={"total_seconds": seconds},
    ).write(folder)


class Killed(BaseException):
    """Stands in for kill -9: the run stops at once, nothing is saved on the way out."""


class StopAt(logging.Handler):
    """When the step log shows ``line``, send SIGINT to this process, or die as under kill -9."""

    def __init__(self, line: str, how: str):
        super().__init__()
        self.line, self.how = line, how

    def emit(self, record):
        if record.getMessage().startswith(self.line):
            if self.how == "kill -9":
                raise Killed
            os.kill(os.getpid(), signal.SIGINT)


def build_tiny_bert(folder: Path, texts: list[str]) -> Path:
    """A 2-layer BERT with random weights and a WordPiece tokenizer trained on ``texts``: the BERT-style
    encoder family in tests (``backbone=local backbone.path=folder``)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    ).save_pretrained(folder)
    return folder
