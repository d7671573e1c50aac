"""A run folder as a self-contained Hugging Face model folder, and its upload to the Hub.

    finetune-pipeline export RUN --format hf [--out DIR]      # -> RUN/export/hf/ by default
    finetune-pipeline push DIR --repo-id user/news-topics [--private]

The folder needs neither the run folder nor the backbone folder:

    model.safetensors   every weight: encoder.* (the Hugging Face encoder's own names) and head.*
    config.json         the encoder's config + id2label/label2id + "finetune_pipeline": head, symbols
    tokenizer files     as used in training (model_max_length = data.max_length)
    id_to_label.json, label_to_id.json
    README.md           the model card, filled from the run (base model and its SHA-256, data
                        fingerprint, labels, test metrics, freeze-proof verdict, training config)

``Classifier.from_pretrained(folder)`` loads it. Before the folder is written, the reloaded folder's
probabilities are compared with the run's on its test texts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import atomic_dir
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.classifier import head_config_of

log = logging.getLogger(__name__)

HF_DIR = Path("export") / "hf"
WEIGHTS = "model.safetensors"
FORMAT = 1  # of the "finetune_pipeline" entry in config.json
TOLERANCE = 1e-5  # the reloaded folder against the run, same fp32 arithmetic


def export_hf(run_dir: Path, out_dir: Path | None = None, checkpoint: str = "best_model.pt", overwrite: bool = False,
              backbone_path: Path | None = None) -> Path:
    from safetensors.torch import save_file

    from finetune_pipeline.export.onnx import check_out_dir, test_texts
    from finetune_pipeline.inference.predictor import Classifier, read_classes

    out_dir = out_dir or run_dir / HF_DIR
    check_out_dir(out_dir, run_dir, overwrite)
    texts, _ = test_texts(run_dir)
    clf = Classifier.from_run(run_dir, checkpoint, backbone_path, device="cpu", precision="fp32")
    classes = read_classes(run_dir / "id_to_label.json")
    head = head_config_of(clf.model)
    config = clf.model.encoder.config
    config.id2label = {i: c["label"] for i, c in enumerate(classes)}
    config.label2id = {c["label"]: i for i, c in enumerate(classes)}
    config.finetune_pipeline = {"format": FORMAT, "head": dataclasses.asdict(head),
                                "symbols": [c["symbol"] for c in classes], "max_length": clf.max_length}
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        save_file({k: v.detach().contiguous() for k, v in clf.model.state_dict().items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})
        clf.tokenizer.save_pretrained(tmp)
        for name in ("id_to_label.json", "label_to_id.json"):
            shutil.copyfile(run_dir / name, tmp / name)
        (tmp / "README.md").write_text(model_card(run_dir, checkpoint, classes, clf.max_length, clf.chunking),
                                       encoding="utf-8")
        sample = texts[:256]
        difference = float(np.abs(Classifier.from_pretrained(tmp, device="cpu", precision="fp32")
                                  .probabilities(sample, progress=False) - clf.probabilities(sample, progress=False)).max())
        if not difference <= TOLERANCE:
            raise PipelineError(f"{run_dir}: the exported folder predicts differently ({difference:.2e}); nothing written")
    log.info("exported %s -> %s (Hugging Face folder; reloaded and checked on %d test texts, max difference %.1e)",
             run_dir / checkpoint, out_dir, len(sample), difference)
    return out_dir


def load_pretrained(folder: Path):
    """(TextClassifier, config) from a folder written by ``export_hf``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from finetune_pipeline.config.schema import Pooling
    from finetune_pipeline.model.classifier import HeadConfig, TextClassifier

    for needed in ("config.json", WEIGHTS):
        if not (folder / needed).is_file():
            raise PipelineError(f"{folder}: not an exported model folder ({needed} is missing)")
    try:
        config = AutoConfig.from_pretrained(folder)
        info = config.finetune_pipeline
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT}")
        head = HeadConfig(**{**info["head"], "dropout": 0.0})
        model = TextClassifier(AutoModel.from_config(config), head.build(), Pooling(head.pooling), frozen=True,
                               chunking=head.chunking())
        model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError) as e:
        raise PipelineError(f"{folder}: not a readable exported model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    check_classes(folder, config, head.classes)
    return model.eval(), config


def check_classes(folder: Path, config, classes: int) -> None:
    """config.json's id2label / label2id / symbols describe the head's ``classes`` outputs, and the
    folder's id_to_label.json (when kept) says the same: an edited file never relabels predictions."""
    info = config.finetune_pipeline
    id2label, symbols = config.id2label, info.get("symbols")
    if sorted(id2label) != list(range(classes)) or not isinstance(symbols, list) or len(symbols) != classes:
        raise PipelineError(f"{folder / 'config.json'}: id2label has {len(id2label)} classes and symbols "
                            f"{len(symbols) if isinstance(symbols, list) else 'none'}, but the head has {classes} outputs")
    if {label: i for i, label in id2label.items()} != config.label2id:
        raise PipelineError(f"{folder / 'config.json'}: label2id is not the inverse of id2label")
    kept = folder / "id_to_label.json"
    if kept.is_file():
        from finetune_pipeline.inference.predictor import read_classes

        if read_classes(kept) != [{"symbol": symbols[i], "label": id2label[i]} for i in range(classes)]:
            raise PipelineError(f"{kept}: disagrees with config.json's id2label / symbols; the folder was edited")


def _reads(max_length: int, chunking) -> str:
    if chunking is None:
        return f"It reads at most {max_length} tokens of a text (the rest is cut off)."
    return (f"It reads whole texts: a text longer than {max_length} tokens is cut into windows of {max_length} "
            f"tokens that share {chunking.stride} tokens, each window is encoded, and the text's vector is the "
            f"{chunking.pooling} of its windows' (`Classifier.from_pretrained` does this; a caller of the raw "
            "weights must do the same).")


def model_card(run_dir: Path, checkpoint: str, classes: list[dict], max_length: int, chunking=None) -> str:
    """README.md of the folder: what the model is, how it was made and how well it did, from the run's records."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    proof = _read(run_dir / "freeze_proof.json")
    stored = run_dir / ".hydra" / "config.yaml"
    config = stored.read_text(encoding="utf-8") if stored.is_file() else "# not recorded: the run was not started by train.py"
    backbone, test, data = metrics.get("backbone", {}), metrics.get("test", {}), metrics.get("data", {})
    pretrained = backbone.get("pretrained", True)
    labels = "\n".join(f"| {i} | {c['label']} | {c['symbol']} | {_per_class(test, c['label'])} |" for i, c in enumerate(classes))
    warning = ("\n> **The base model was not pretrained** (a random-init stand-in): this classifier only "
               "demonstrates the pipeline.\n" if not pretrained else "")
    return f"""---
library_name: finetune-pipeline
pipeline_tag: text-classification
tags: [text-classification, news, finetune-pipeline]
---

# News-topic classifier ({len(classes)} classes) over {backbone.get('name', 'an encoder')}
{warning}
An MLP head over the pooled states of the encoder, trained with finetune-pipeline (run folder
`{run_dir.name}`, {checkpoint}).

```python
from finetune_pipeline import Classifier
clf = Classifier.from_pretrained("<this folder>")
clf.predict(["Central bank raises rates"], top_k=3)
```

## Base model

- name: {backbone.get('name')}
- SHA-256 of its weights: `{backbone.get('sha256')}`
- freeze proof: {proof.get('verdict', 'not recorded')}

## Data

- records: {data.get('records')} ({data.get('train')} train / {data.get('val')} validation / {data.get('test')} test)
- raw-data fingerprint (SHA-256): `{data.get('raw_fingerprint')}`

## Test results (best epoch {metrics.get('best', {}).get('epoch')})

| accuracy | macro-F1 | weighted F1 | loss |
|---|---|---|---|
| {_fmt(test.get('test/accuracy'))} | {_fmt(test.get('test/macro_f1'))} | {_fmt(test.get('test/weighted_f1'))} | {_fmt(test.get('test/loss'))} |

| id | label | symbol | test F1 |
|---|---|---|---|
{labels}

## Intended use and limits

Topic classification of news texts like those it was trained on, into the labels above. {_reads(max_length, chunking)}
It knows only these labels; check it on your own data before relying on it.

## Training config

```yaml
{config.strip()}
```
"""


def push(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported folder to the Hub once it loads (weights, config and class lists agree);
    returns the repository's URL. Offline: one line."""
    from huggingface_hub import HfApi

    for needed in ("config.json", WEIGHTS, "README.md"):
        if not (folder / needed).is_file():
            raise PipelineError(f"{folder}: not an exported model folder ({needed} is missing); "
                                "make one with `finetune-pipeline export RUN --format hf`")
    load_pretrained(folder)  # a damaged or edited folder is refused here, not published
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload a finetune-pipeline classifier")
    except Exception as e:  # offline, no token, no rights, HTTP errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"pushing {folder} to the Hub as {repo_id} failed ({reason}); nothing was uploaded "
                            "unless the Hub says otherwise") from None
    return str(url)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _per_class(test: dict, label: str) -> str:
    entry = (test.get("per_class") or {}).get(label) or {}
    return _fmt(entry.get("f1"))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

