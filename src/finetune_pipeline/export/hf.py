"""A run folder as a Hugging Face model folder that plain transformers loads, and its upload to the Hub.

    finetune-pipeline export RUN --format hf [--out DIR]      # -> RUN/export/hf/ by default
    finetune-pipeline push DIR --repo-id user/news-topics [--private]

The folder needs neither the run folder, the backbone folder nor finetune-pipeline:

    config.json                     model_type "finetune-pipeline-classifier" + auto_map: the encoder's own
                                    config inside (encoder_config), the head, how texts become windows,
                                    id2label/label2id, and "finetune_pipeline": symbols, head, format
    modeling_finetune_pipeline.py   the model code (export/hf_modeling.py, torch + transformers only)
    model.safetensors               every weight: encoder.* (the encoder's own names) and head.*
    tokenizer files                 as used in training (model_max_length = data.max_length)
    id_to_label.json, label_to_id.json
    README.md                       the model card: this folder's own test figures, no local paths
    export.json                     where it came from, its checks, the SHA-256 of every file

``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` and
``pipeline("text-classification", model=folder, trust_remote_code=True)`` load it; without
``trust_remote_code`` transformers refuses (an architecture of its own would load with random
weights). Before the folder is written, the model code is run through transformers on the run's
test texts (and on long texts built from them, for the windows) and must agree with finetune-pipeline's
own engine within ``TOLERANCE``; ``Classifier.from_pretrained(folder)`` reads the folder too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch

from finetune_pipeline.artifacts.atomic import atomic_dir
from finetune_pipeline.artifacts.names import BEST_MODEL_FILE, ID_TO_LABEL_FILE, LABEL_TO_ID_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.evaluation.report import scores_report
from finetune_pipeline.export import hf_modeling
from finetune_pipeline.export.local_paths import describe, machine_paths_in_folder, without_machine_paths
from finetune_pipeline.export.model_card import model_card
from finetune_pipeline.export.shared import check_out_dir, refuse_machine_paths, save_tokenizer, test_texts
from finetune_pipeline.inference.hf_folder import FORMAT, WEIGHTS, load_pretrained
from finetune_pipeline.inference.manifest import checkpoint_source, write_manifest
from finetune_pipeline.model.classifier import threshold_logits
from finetune_pipeline.runtime.progress import progress_bar

log = logging.getLogger(__name__)

HF_DIR = Path("export") / "hf"
MODELING = "modeling_finetune_pipeline.py"
TOLERANCE = 1e-4  # transformers' run of the folder against finetune-pipeline's engine, fp32 (other padding)
LONG_TEXTS = 8  # texts of several test texts each, longer than max_length: the windows are checked too


def export_hf(
    run_dir: Path,
    out_dir: Path | None = None,
    checkpoint: str = BEST_MODEL_FILE,
    overwrite: bool = False,
    backbone_path: Path | None = None,
) -> Path:
    from safetensors.torch import save_file

    from finetune_pipeline.inference.classes import read_classes
    from finetune_pipeline.inference.predictor import Classifier

    out_dir = out_dir or run_dir / HF_DIR
    check_out_dir(out_dir, run_dir, overwrite)
    texts, y_true = test_texts(run_dir)
    clf = Classifier.from_run(run_dir, checkpoint, backbone_path, device="cpu", precision="fp32")
    classes = read_classes(run_dir / ID_TO_LABEL_FILE)
    config = folder_config(clf, classes)
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        shutil.copyfile(hf_modeling.__file__, tmp / MODELING)
        save_file(
            {k: v.detach().contiguous() for k, v in clf.model.state_dict().items()},
            str(tmp / WEIGHTS),
            metadata={"format": "pt"},
        )
        save_tokenizer(clf.tokenizer, tmp)
        for name in (ID_TO_LABEL_FILE, LABEL_TO_ID_FILE):
            shutil.copyfile(run_dir / name, tmp / name)
        long_texts = [" ".join(texts[i::LONG_TEXTS]) for i in range(min(LONG_TEXTS, len(texts)))]
        exported = probabilities_through_transformers(tmp, texts + long_texts)
        difference = float(np.abs(exported - clf.probabilities(texts + long_texts, progress=False)).max())
        if not difference <= TOLERANCE:
            raise PipelineError(
                f"{run_dir}: the exported folder, run by transformers, differs from the run's model by "
                f"{difference:.2e} (> {TOLERANCE:g}) on its test texts; nothing was written"
            )
        report = scores_report(
            y_true, exported[: len(texts)], [c["symbol"] for c in classes], [c["label"] for c in classes]
        )
        (tmp / "README.md").write_text(
            model_card(run_dir, checkpoint, report, clf.max_length, clf.chunking, len(long_texts)), encoding="utf-8"
        )
        write_manifest(
            tmp,
            {
                "format": "hf",
                "source": checkpoint_source(run_dir, checkpoint),
                "test_texts": len(texts),
                "long_texts": len(long_texts),
                "max_abs_probability_difference": difference,
                "tolerance": TOLERANCE,
                "test": {k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1")},
            },
        )
        refuse_machine_paths(tmp, out_dir, run_dir, backbone_path)
    log.info(
        "exported %s -> %s (Hugging Face folder with its model code; run by transformers on %d test and %d "
        "long texts, max difference %.1e; test accuracy %.4f)",
        run_dir / checkpoint,
        out_dir,
        len(texts),
        len(long_texts),
        difference,
        report["accuracy"],
    )
    return out_dir


def folder_config(clf, classes: list[dict]) -> hf_modeling.FinetunePipelineConfig:
    """config.json of the folder: what the shipped model code needs, and the project's own entry."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    encoder = clf.model.encoder.config
    if encoder.model_type not in CONFIG_MAPPING or getattr(encoder, "auto_map", None):
        raise PipelineError(
            f"{encoder.model_type}: an encoder whose code transformers does not ship; its Hugging "
            "Face folder would need that code too -- use --format onnx or the run folder"
        )
    encoder_config = {
        k: v
        for k, v in encoder.to_dict().items()
        if k not in ("_name_or_path", "architectures", "transformers_version", "id2label", "label2id")
    }
    head = clf.model.config
    before, after = special_tokens_around(clf.tokenizer)
    return hf_modeling.FinetunePipelineConfig(
        encoder_config=without_machine_paths(encoder_config),
        head={
            "in_dim": head.in_dim,
            "hidden_dim": head.hidden_dim,
            "pooling": head.pooling,
            "temperature": head.temperature,
            "threshold_logits": threshold_logits(head.thresholds) if head.multi_label and head.thresholds else None,
        },
        windows={
            "max_length": clf.max_length,
            "special_before": before,
            "special_after": after,
            "stride": head.chunk_stride,
            "pooling": head.chunk_pooling,
        },
        id2label={i: c["label"] for i, c in enumerate(classes)},
        label2id={c["label"]: i for i, c in enumerate(classes)},
        problem_type="multi_label_classification" if head.multi_label else "single_label_classification",
        architectures=[hf_modeling.FinetunePipelineForSequenceClassification.__name__],
        auto_map={
            "AutoConfig": f"{Path(MODELING).stem}.{hf_modeling.FinetunePipelineConfig.__name__}",
            "AutoModelForSequenceClassification": (
                f"{Path(MODELING).stem}.{hf_modeling.FinetunePipelineForSequenceClassification.__name__}"
            ),
        },
        pad_token_id=clf.tokenizer.pad_token_id,
        finetune_pipeline={
            "format": FORMAT,
            "head": dataclasses.asdict(head),
            "symbols": [c["symbol"] for c in classes],
            "max_length": clf.max_length,
        },
    )


def special_tokens_around(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text ([CLS] x [SEP]: 1, 1)."""
    bare = tokenizer("word", add_special_tokens=False)["input_ids"]
    full = tokenizer("word")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return start, len(full) - start - len(bare)
    raise PipelineError("the tokenizer's special tokens are not around the text; this folder cannot window texts")


def probabilities_through_transformers(folder: Path, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """(N, C) probabilities of the folder run as a stranger would: its tokenizer (untruncated, as
    the text-classification pipeline calls it) and its model code, loaded by transformers."""
    from transformers import AutoTokenizer

    spec = importlib.util.spec_from_file_location(f"finetune_pipeline_export_{uuid.uuid4().hex}", folder / MODELING)
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    model = code.FinetunePipelineForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # the config is ours
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    bar = progress_bar(len(texts), "checking the export in transformers")
    with torch.inference_mode(), bar:
        for start in range(0, len(texts), batch_size):
            bar.update(min(batch_size, len(texts) - start))
            index = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, return_tensors="pt", verbose=False)
            logits = model(**batch).logits
            multi = model.config.problem_type == "multi_label_classification"
            probs[index] = (logits.sigmoid() if multi else logits.softmax(dim=-1)).numpy()
    return probs


def push(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported folder to the Hub once it loads (weights, config and class lists agree)
    and holds no path of this machine; returns the repository's URL. Offline: one line."""
    from huggingface_hub import HfApi

    for needed in ("config.json", WEIGHTS, "README.md"):
        if not (folder / needed).is_file():
            raise PipelineError(
                f"{folder}: not an exported model folder ({needed} is missing); "
                "make one with `finetune-pipeline export RUN --format hf`"
            )
    load_pretrained(folder)  # a damaged or edited folder is refused here, not published
    found = machine_paths_in_folder(folder)
    if found:
        raise PipelineError(
            f"{folder}: not pushed: {describe(found)}, a path of this machine; export the run "
            "again (exports write none) or remove it"
        )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload a finetune-pipeline classifier",
        )
    except Exception as e:  # offline, no token, no rights, HTTP errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(
            f"pushing {folder} to the Hub as {repo_id} failed ({reason}); nothing was uploaded "
            "unless the Hub says otherwise"
        ) from None
    return str(url)
