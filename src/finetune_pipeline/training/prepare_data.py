"""Recipe step 1: the data -- preprocessed if needed, classes indexed, split (with the leakage
policy), and after the tokenizer the data report into the run folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.names import DATA_REPORT_FILE
from finetune_pipeline.config.schema import Config, DataConfig, Task
from finetune_pipeline.data.choose_split import choose_split
from finetune_pipeline.data.classes import ClassIndex
from finetune_pipeline.data.hf_source import keeps_own_split
from finetune_pipeline.data.preprocess import CombinedDataset, ensure_preprocessed, load_combined, source_name
from finetune_pipeline.data.report import Leakage, apply_leakage_policy, build_report, find_leakage, set_name
from finetune_pipeline.data.split import Split, limit_samples
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.tracking.trackers import Trackers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    dataset: CombinedDataset  # texts, symbols, raw fingerprint, the raw part of each record
    classes: ClassIndex
    labels: list  # class id of each record; multi-label: each record's sorted tuple of label ids
    multi_label: bool
    split: Split
    split_how: str  # stratified | files [(val carved from train)] | fold k of K
    leakage: Leakage  # of the split as chosen (before data.leakage=drop)


def setup_data(cfg: Config, dist: Dist) -> PreparedData:
    """Preprocess if needed (rank 0), read, index the classes and split. Logs one line."""
    if dist.is_main:
        ensure_preprocessed(cfg.data)
    dist.barrier()
    dataset = load_combined(cfg.data)
    classes, labels, multi_label = index_labels(cfg.data, dataset)
    if multi_label and len(classes) == 0:
        raise PipelineError(
            f"{source_name(cfg.data)}: every record's label list is empty; a multi-label classifier needs "
            "records with at least one label"
        )
    if len(classes) < 2 and not multi_label:
        raise PipelineError(
            f"{source_name(cfg.data)}: every record has the label {classes.labels[0]!r}; "
            "a classifier needs at least 2 classes"
        )
    chosen = choose_split(cfg.data, dataset.files, labels, classes.display_names(), keeps_own_split(cfg.data))
    names = label_names(classes, labels)
    leakage = find_leakage(dataset.texts, [set_name(x) if isinstance(x, tuple) else x for x in names], chosen.split)
    split = apply_leakage_policy(cfg.data.leakage, chosen.split, leakage)
    limited = cfg.data.max_train_samples is not None or cfg.data.max_eval_samples is not None
    if limited:
        split = limit_samples(split, labels, cfg.data.max_train_samples, cfg.data.max_eval_samples, cfg.data.seed)
    log.info("split: %s (%s)", chosen.how, chosen.why)
    log.info(
        "data: %d records, %d %s; %s split train/val/test = %d/%d/%d%s",
        len(labels),
        len(classes),
        "labels (multi-label)" if multi_label else "classes",
        chosen.how,
        len(split.train),
        len(split.val),
        len(split.test),
        " (max_train_samples / max_eval_samples)" if limited else "",
    )
    return PreparedData(dataset, classes, labels, multi_label, split, chosen.how, leakage)


def index_labels(cfg: DataConfig, dataset: CombinedDataset) -> tuple[ClassIndex, list, bool]:
    """The class index, each record's class id (multi-label: its sorted tuple of label ids), and
    whether the run is multi-label (``data.task``)."""
    multi_label = is_multi_label(cfg, dataset)
    every = [s for symbols in dataset.symbols for s in ([symbols] if isinstance(symbols, str) else symbols)]
    classes = ClassIndex.from_dataset(every, dataset.label_to_symbol)
    if multi_label:
        return classes, [tuple(sorted(classes.ids([s] if isinstance(s, str) else s))) for s in dataset.symbols], True
    return classes, classes.ids([s if isinstance(s, str) else s[0] for s in dataset.symbols]), False  # [x] is x


def is_multi_label(cfg: DataConfig, dataset: CombinedDataset) -> bool:
    """data.task, with ``auto`` decided by the data: multi-label when a record lists other than one label."""
    if cfg.task == Task.single_label and dataset.several_labels_at:
        raise PipelineError(
            f"{source_name(cfg)}: {dataset.several_labels_at} lists other than one label, but data.task=single_label; "
            "use data.task=multi_label (or auto) to train a multi-label classifier"
        )
    if cfg.task == Task.auto and dataset.several_labels_at:
        log.info("task: multi-label (%s lists other than one label; data.task=auto)", dataset.several_labels_at)
    return cfg.task == Task.multi_label or (cfg.task == Task.auto and dataset.several_labels_at is not None)


def label_names(classes: ClassIndex, labels: list) -> list:
    """Each record's label name; multi-label: the tuple of its labels' names."""
    if labels and isinstance(labels[0], tuple):
        return [tuple(classes.labels[c] for c in ids) for ids in labels]
    return [classes.labels[c] for c in labels]


def write_data_report(cfg: Config, data: PreparedData, tokenizer, run_dir: Path, trackers: Trackers) -> None:
    """data_report.json / .md / .png into the run folder (the split as trained); its findings logged."""
    labels = label_names(data.classes, data.labels)
    report = build_report(
        source_name(cfg.data),
        data.dataset.texts,
        labels,
        data.split,
        data.split_how,
        tokenizer,
        cfg.data.max_length,
        cfg.data.leakage.value,
        data.dataset.duplicates_dropped,
        cfg.data.long_text.value,
        data.leakage,
    )
    report.write(run_dir)
    for warning in report.warnings():
        if not warning.startswith("leakage"):  # said already when the split was made
            log.warning("data report: %s", warning)
    log.info(
        "data report: %s (leakage %d, conflicts %d, %.1f%% truncated at %d tokens)",
        run_dir / DATA_REPORT_FILE,
        report.leakage["cross_split"]["count"],
        report.conflicts["count"],
        100 * report.lengths["truncated_share"],
        cfg.data.max_length,
    )
    trackers.set_tags(
        {
            "data.leakage": str(report.leakage["cross_split"]["count"]),
            "data.conflicts": str(report.conflicts["count"]),
            "data.split": data.split_how,
        }
    )
