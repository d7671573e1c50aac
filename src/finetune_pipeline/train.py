"""``train(cfg, run_dir) -> metrics``: the whole recipe, setup -> fit -> test -> artifacts.

Each ``_setup_*`` helper builds one thing and logs one line. The root ``train.py`` is a thin Hydra
wrapper around this function; tests call it directly with a composed config.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers.utils import logging as hf_logging

from finetune_pipeline.artifacts.atomic import atomic_dir, save_torch, write_json
from finetune_pipeline.artifacts.freeze_proof import build_freeze_proof, module_hashes
from finetune_pipeline.backbone.load import load_encoder, load_tokenizer, locate_backbone
from finetune_pipeline.config.schema import Config
from finetune_pipeline.data.batches import TokenizedTexts, make_loader
from finetune_pipeline.data.classes import ClassIndex
from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined
from finetune_pipeline.data.split import stratified_split
from finetune_pipeline.model.classifier import TextClassifier, build_head, freeze
from finetune_pipeline.training.evaluate import per_class_report, predict, scores
from finetune_pipeline.training.loop import fit
from finetune_pipeline.training.optim import build_optimizer
from finetune_pipeline.training.precision import resolve_device, resolve_precision
from finetune_pipeline.training.schedule import build_scheduler, optimizer_steps

log = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def train(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Train one classifier; every artifact goes to ``run_dir``. Returns the headline metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # weight-loading bars would drown the step log
    handler = _log_to_file(run_dir / "train.log")
    try:
        log.info("run folder: %s", run_dir)
        return _train(cfg, run_dir)
    except Exception:
        log.error("run failed; its log and any artifacts written so far are in %s", run_dir)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _train(cfg: Config, run_dir: Path) -> dict[str, float]:
    started = time.perf_counter()
    ensure_preprocessed(cfg.data)
    dataset = load_combined(cfg.data)
    classes = ClassIndex.from_dataset(dataset.symbols, dataset.label_to_symbol)
    labels = classes.ids(dataset.symbols)
    split = stratified_split(labels, cfg.data.train_ratio, cfg.data.val_ratio, cfg.data.seed, classes.display_names())
    log.info("data: %d records, %d classes; split train/val/test = %d/%d/%d",
             len(labels), len(classes), *(len(s) for s in split))

    backbone = locate_backbone(cfg.backbone, cfg.data.max_length, dataset.texts, dataset.fingerprint)
    tokenizer = load_tokenizer(backbone, cfg.backbone)
    # data and backbone checked: from here on the run folder fills with artifacts
    write_json(run_dir / "label_to_id.json", classes.label_to_id())
    write_json(run_dir / "id_to_label.json", classes.id_to_label())
    with atomic_dir(run_dir / "tokenizer") as tmp:
        tokenizer.save_pretrained(tmp)
    device = resolve_device(cfg.training.device)
    precision = resolve_precision(cfg.precision.mixed_precision, device)
    log.info("device %s, precision %s (requested %s)", device, precision.name, cfg.precision.mixed_precision.value)

    loaders = _setup_data(cfg, dataset.texts, labels, split, tokenizer)
    model = _setup_model(cfg, backbone, len(classes)).to(device)
    hashes_before = module_hashes(model.encoder)
    optimizer = build_optimizer(model, cfg.training.learning_rate, cfg.training.encoder_learning_rate, cfg.training.weight_decay)
    total_steps = optimizer_steps(len(loaders.train), cfg.training.gradient_accumulation_steps, cfg.training.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.training.warmup_ratio)
    log.info("optimizer: AdamW, groups %s, %d optimizer steps", [g["name"] for g in optimizer.param_groups], total_steps)
    setup_seconds = time.perf_counter() - started

    result = fit(model, loaders.train, loaders.val, optimizer, scheduler, precision, device, cfg.training, run_dir)
    save_torch(run_dir / "final_model.pt", model.state_dict())

    proof = build_freeze_proof(hashes_before, module_hashes(model.encoder), cfg.training.freeze_backbone,
                               model, str(backbone.folder))
    write_json(run_dir / "freeze_proof.json", proof)
    log.info("freeze proof: %s (encoder sha256 %s -> %s)", proof["verdict"],
             proof["encoder_sha256_before"][:12], proof["encoder_sha256_after"][:12])

    test_start = time.perf_counter()
    model.load_state_dict(torch.load(run_dir / "best_model.pt", map_location=device, weights_only=True))
    save_torch(run_dir / "classifier_head.pt", model.head.state_dict())
    test_predictions = predict(model, loaders.test, precision, device)
    test = scores(test_predictions, "test")
    report = per_class_report(test_predictions, classes.display_names())
    log.info("test (best epoch %d): accuracy=%.4f macro_f1=%.4f loss=%.4f",
             result.best_epoch, test["test/accuracy"], test["test/macro_f1"], test["test/loss"])

    best_key = f"val/{cfg.training.best_metric.value}"
    summary = {"best/epoch": result.best_epoch, f"best/{best_key}": result.best_value, **test}
    write_json(run_dir / "metrics.json", {
        "summary": summary,
        "history": result.history,
        "best": {"metric": best_key, "value": result.best_value, "epoch": result.best_epoch},
        "test": {**test, "per_class": report},
        "data": {"records": len(labels), "classes": len(classes),
                 "train": len(split[0]), "val": len(split[1]), "test": len(split[2]),
                 "raw_fingerprint": dataset.fingerprint},
        "backbone": {"name": cfg.backbone.name, "path": str(backbone.folder), "pretrained": backbone.pretrained},
        "device": str(device),
        "precision": precision.name,
        "timings": {"setup_seconds": setup_seconds, "train_seconds": result.train_seconds,
                    "test_seconds": time.perf_counter() - test_start,
                    "total_seconds": time.perf_counter() - started},
    })
    log.info("artifacts written to %s", run_dir)
    return summary


def _setup_data(cfg: Config, texts: list[str], labels: list[int], split, tokenizer) -> Loaders:
    t = cfg.training

    def loader(idx: np.ndarray, shuffle: bool) -> DataLoader:
        data = TokenizedTexts([texts[i] for i in idx], [labels[i] for i in idx], tokenizer, cfg.data.max_length)
        return make_loader(data, t.batch_size, shuffle, cfg.data.seed, t.num_workers, tokenizer.pad_token_id)

    loaders = Loaders(loader(split[0], True), loader(split[1], False), loader(split[2], False))
    log.info("data loaders: batch %d, %d train batches per epoch, max_length %d, dynamic padding",
             t.batch_size, len(loaders.train), cfg.data.max_length)
    return loaders


def _setup_model(cfg: Config, backbone, num_classes: int) -> TextClassifier:
    encoder = load_encoder(backbone, cfg.backbone)
    _seed_everything(cfg.data.seed)  # the head's initialisation and dropout depend on the seed only
    head = build_head(encoder.config.hidden_size, cfg.model.hidden_dim, num_classes, cfg.model.dropout)
    model = TextClassifier(encoder, head, cfg.model.pooling)
    if cfg.training.freeze_backbone:
        freeze(model.encoder)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %s pooling -> MLP head %d -> %d -> %d; backbone %s; %.2fM trainable parameters",
             cfg.model.pooling.value, encoder.config.hidden_size, cfg.model.hidden_dim, num_classes,
             "frozen" if cfg.training.freeze_backbone else "trainable", n_trainable / 1e6)
    return model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
