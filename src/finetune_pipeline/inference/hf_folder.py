"""Reading a Hugging Face export folder (``finetune-pipeline export --format hf``) as this project's
classifier: this version's folders (``model_type: finetune-pipeline-classifier``, the encoder's config
inside) and the earlier ones (the encoder's own config.json), checked and verified against
``export.json``. transformers reads the same folders through their shipped model code
(``export/hf_modeling.py``)."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune_pipeline.artifacts.names import ID_TO_LABEL_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.inference.classes import read_classes
from finetune_pipeline.inference.manifest import REPORT, verify

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
MODEL_TYPE = "finetune-pipeline-classifier"  # export/hf_modeling.py's FinetunePipelineConfig.model_type
FORMAT = 2  # of the "finetune_pipeline" entry in config.json; 1: the encoder's config.json (no model code)


@dataclass(frozen=True)
class ExportedFolder:
    """A loaded folder: the classifier (eval mode) and its classes."""

    model: torch.nn.Module
    labels: list[str]
    symbols: list[str]


def load_pretrained(folder: Path) -> ExportedFolder:
    """The classifier of a folder written by ``export_hf`` (this format or the earlier one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from finetune_pipeline.model.classifier import HeadConfig, TextClassifier

    for needed in ("config.json", WEIGHTS):
        if not (folder / needed).is_file():
            raise PipelineError(f"{folder}: not an exported model folder ({needed} is missing)")
    if (folder / REPORT).is_file():  # exports since manifests: every file as the export wrote and checked it
        verify(folder)
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if raw.get("model_type") == MODEL_TYPE:  # format 2: the encoder's config inside
            encoder = dict(raw["encoder_config"])
            encoder_config = CONFIG_MAPPING[encoder.pop("model_type")].from_dict(encoder)
        else:  # format 1: config.json was the encoder's own
            encoder_config = AutoConfig.from_pretrained(folder)
        info = raw["finetune_pipeline"]
        if info.get("format") not in (1, FORMAT):
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT}")
        head = HeadConfig(**{**info["head"], "dropout": 0.0})
        with skipped_initialisation():  # every weight is read from the file next: drawing them first cost 17 s of 23
            encoder = AutoModel.from_config(encoder_config)
        model = TextClassifier(encoder, head, frozen=True)
        model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
        labels, symbols = check_classes(folder, raw, head.classes)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError) as e:
        raise PipelineError(
            f"{folder}: not a readable exported model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if raw.get("model_type") != MODEL_TYPE:
        log.warning(
            "%s: exported by an earlier version (plain transformers loads it with random weights); "
            "export the run again for a folder transformers reads",
            folder,
        )
    return ExportedFolder(model.eval(), labels, symbols)


def skipped_initialisation():
    """transformers' context that builds a model without drawing its initial weights (5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        return contextlib.nullcontext()
    return no_init_weights()


def check_classes(folder: Path, raw: dict, classes: int) -> tuple[list[str], list[str]]:
    """config.json's id2label / label2id / symbols describe the head's ``classes`` outputs, and the
    folder's id_to_label.json (when kept) says the same: an edited file never relabels predictions.
    Returns (labels, symbols) in class-id order."""
    id2label = {int(i): label for i, label in (raw.get("id2label") or {}).items()}
    symbols = raw["finetune_pipeline"].get("symbols")
    if sorted(id2label) != list(range(classes)) or not isinstance(symbols, list) or len(symbols) != classes:
        raise PipelineError(
            f"{folder / 'config.json'}: id2label has {len(id2label)} classes and symbols "
            f"{len(symbols) if isinstance(symbols, list) else 'none'}, but the head has {classes} outputs"
        )
    if {label: i for i, label in id2label.items()} != raw.get("label2id"):
        raise PipelineError(f"{folder / 'config.json'}: label2id is not the inverse of id2label")
    labels = [id2label[i] for i in range(classes)]
    kept = folder / ID_TO_LABEL_FILE
    if kept.is_file() and read_classes(kept) != [{"symbol": symbols[i], "label": labels[i]} for i in range(classes)]:
        raise PipelineError(f"{kept}: disagrees with config.json's id2label / symbols; the folder was edited")
    return labels, symbols
