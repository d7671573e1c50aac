"""README.md of a Hugging Face export: what the model is, how it was made, how well the folder did.

The figures are those of the exported folder itself, measured by the export on the run's test texts
through plain transformers (not copied from metrics.json, which describes whatever checkpoint the
run folder held). No absolute path of the machine appears: the backbone is named by its Hub id or
folder name, the data by its name, size, classes and fingerprint, and the training config has its
paths cut to their last part. Labels are escaped, so a label cannot become markup in the card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.artifacts.markdown import markdown_cell
from finetune_pipeline.artifacts.metrics_record import RunMetrics
from finetune_pipeline.artifacts.names import CONFIG_DIR, FREEZE_PROOF_FILE, METRICS_FILE
from finetune_pipeline.export.local_paths import public_path, without_machine_paths


def backbone_name(stored: dict, metrics_backbone: dict) -> str:
    """The Hub id when the config has one, else the backbone folder's name (never its path)."""
    backbone = stored.get("backbone") or {}
    if backbone.get("hub_id"):
        return str(backbone["hub_id"])
    path = backbone.get("path") or metrics_backbone.get("path")
    name = public_path(str(path)) if path else ""
    return name or str(backbone.get("name") or metrics_backbone.get("name") or "an encoder")


def data_name(stored: dict) -> str:
    data = stored.get("data") or {}
    source = (data.get("hf") or {}).get("path") or data.get("raw_dir") or "data"
    return public_path(str(source)) if Path(str(source)).is_absolute() else str(source)


def stored_config(run_dir: Path) -> dict:
    try:
        config = yaml.safe_load((run_dir / CONFIG_DIR / "config.yaml").read_text(encoding="utf-8"))
        return config if isinstance(config, dict) else {}
    except (OSError, yaml.YAMLError):
        return {}


def model_card(run_dir: Path, checkpoint: str, report: dict, max_length: int, chunking, windows_checked: int) -> str:
    """``report``: ``evaluation.report.build_report`` of the exported folder on the run's test texts."""
    metrics, proof = _records(run_dir)
    stored = stored_config(run_dir)
    backbone, data = (metrics.backbone, metrics.data) if metrics else ({}, {})
    name = backbone_name(stored, backbone)
    per_class = report["per_class"]
    labels = "\n".join(
        f"| {i} | {markdown_cell(label)} | {markdown_cell(c['symbol'])} | {c['support']} | {c['f1']:.4f} |"
        for i, (label, c) in enumerate(per_class.items())
    )
    warning = (
        "\n> **The base model was not pretrained** (a random-init stand-in): this classifier only "
        "demonstrates the pipeline.\n"
        if not backbone.get("pretrained", True)
        else ""
    )
    config = (
        yaml.safe_dump(without_machine_paths(stored), sort_keys=False, allow_unicode=True)
        if stored
        else "# not recorded: the run was not started by train.py\n"
    )
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", config)), default=0))  # never closed early
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [text-classification, news, finetune-pipeline]
base_model: {json.dumps(name, ensure_ascii=False)}
---

# News-topic classifier ({len(per_class)} classes) over {markdown_cell(name)}
{warning}
An MLP head over the pooled states of the encoder, trained with finetune-pipeline (run `{markdown_cell(run_dir.name)}`,
{markdown_cell(checkpoint)}). The folder ships its model code (`modeling_finetune_pipeline.py`), so plain
transformers loads it with `trust_remote_code=True` (without it, loading is refused rather than guessed):

```python
from transformers import pipeline
classify = pipeline("text-classification", model="<this folder>", trust_remote_code=True)
classify("Central bank raises rates", top_k=3)
```

or, with finetune-pipeline installed, `Classifier.from_pretrained("<this folder>").predict([...])`.

## Base model

- {markdown_cell(name)}, SHA-256 of its weights `{backbone.get("sha256")}`
- freeze proof: {proof.verdict if proof else "not recorded"}

## Data

- {markdown_cell(data_name(stored))}: {data.get("records")} records ({data.get("train")} train / \
{data.get("val")} validation / {data.get("test")} test), {len(per_class)} classes
- raw-data fingerprint (SHA-256): `{data.get("raw_fingerprint")}`

## Test results of this folder

Measured by the export through transformers on the run's {report["texts"]} test texts (and {windows_checked}
long texts against finetune-pipeline's own reading of them).

| accuracy | macro-F1 | weighted F1 |
|---|---|---|
| {report["accuracy"]:.4f} | {report["macro_f1"]:.4f} | {report["weighted_f1"]:.4f} |

{_scores(metrics.calibration if metrics else {})}

| id | label | symbol | test texts | test F1 |
|---|---|---|---|---|
{labels}

## Intended use and limits

Topic classification of news texts like those it was trained on, into the labels above. {_reads(max_length, chunking)}
It knows only these labels; check it on your own data before relying on it.

## Training config

{fence}yaml
{config.strip()}
{fence}
"""


def _reads(max_length: int, chunking) -> str:
    if chunking is None:
        return f"It reads at most {max_length} tokens of a text (the rest is cut off, by the model code too)."
    return (
        f"It reads whole texts: a text longer than {max_length} tokens is cut into windows of {max_length} "
        f"tokens that share {chunking.stride} tokens, each window is encoded, and the text's vector is the "
        f"{chunking.pooling} of its windows' (the model code does this; pass untruncated token ids)."
    )


def _scores(calibration: dict) -> str:
    """What the scores mean: calibrated probabilities (temperature scaling), the raw softmax, or (a
    multi-label run) per-label sigmoids with each label's threshold folded in."""
    if calibration.get("method") == "thresholds":
        kept = sum(1 for t in calibration.get("thresholds", {}).values() if t == 0.5)
        return (
            "A multi-label classifier (`problem_type: multi_label_classification`): each label's score is a "
            "sigmoid, and the label applies where it reaches 0.5, which is that label's decision threshold: "
            "the thresholds tuned on the validation split (each label's F1) are folded into the logits by the "
            f"model code ({kept} of {len(calibration.get('thresholds', {}))} labels kept 0.5). On the run's test "
            f"texts micro-F1 was {calibration['micro_f1_tuned']:.4f} (at a plain 0.5: "
            f"{calibration['micro_f1_at_0.5']:.4f})."
        )
    if calibration.get("method") != "temperature":
        return "Scores are the raw softmax of the logits (the run fitted no calibration)."
    return (
        f"Scores are calibrated probabilities: the logits are divided by a temperature of "
        f"{calibration['temperature']:.3f}, fitted on the validation split (the model code does this); on the "
        f"run's test texts the expected calibration error (15 bins) went from {calibration['ece_before']:.3f} to "
        f"{calibration['ece_after']:.3f}."
    )


def _records(run_dir: Path) -> tuple[RunMetrics | None, FreezeProof | None]:
    """The run's metrics.json and freeze_proof.json; a run without them (a hand-made folder) still exports."""
    metrics = RunMetrics.read(run_dir) if (run_dir / METRICS_FILE).is_file() else None
    proof = FreezeProof.read(run_dir) if (run_dir / FREEZE_PROOF_FILE).is_file() else None
    return metrics, proof
