"""Recipe step 1: the data -- preprocessed if needed, classes indexed, split (with the leakage
policy), and after the tokenizer the data report into the run folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.names import DATA_REPORT_FILE
from finetune_pipeline.config.schema import Config
from finetune_pipeline.data.choose_split import choose_split
from finetune_pipeline.data.classes import ClassIndex
from finetune_pipeline.data.hf_source import keeps_own_split
from finetune_pipeline.data.preprocess import CombinedDataset, ensure_preprocessed, load_combined, source_name
from finetune_pipeline.data.report import Leakage, apply_leakage_policy, build_report, find_leakage
from finetune_pipeline.data.split import Split, limit_samples
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.distributed import Dist
from finetune_pipeline.tracking.trackers import Trackers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    dataset: CombinedDataset  # texts, symbols, raw fingerprint, the raw part of each record
    classes: ClassIndex
    labels: list[int]  # class id of each record
    split: Split
    split_how: str  # stratified | files [(val carved from train)] | fold k of K
    leakage: Leakage  # of the split as chosen (before data.leakage=drop)


def setup_data(cfg: Config, dist: Dist) -> PreparedData:
    """Preprocess if needed (rank 0), read, index the classes and split. Logs one line."""
    if dist.is_main:
        ensure_preprocessed(cfg.data)
    dist.barrier()
    dataset = load_combined(cfg.data)
    classes = ClassIndex.from_dataset(dataset.symbols, dataset.label_to_symbol)
    labels = classes.ids(dataset.symbols)
    if len(classes) < 2:
        raise PipelineError(
            f"{source_name(cfg.data)}: every record has the label {classes.labels[0]!r}; "
            "a classifier needs at least 2 classes"
        )
    chosen = choose_split(cfg.data, dataset.files, labels, classes.display_names(), keeps_own_split(cfg.data))
    leakage = find_leakage(dataset.texts, [classes.labels[c] for c in labels], chosen.split)
    split = apply_leakage_policy(cfg.data.leakage, chosen.split, leakage)
    limited = cfg.data.max_train_samples is not None or cfg.data.max_eval_samples is not None
    if limited:
        split = limit_samples(split, labels, cfg.data.max_train_samples, cfg.data.max_eval_samples, cfg.data.seed)
    log.info("split: %s (%s)", chosen.how, chosen.why)
    log.info(
        "data: %d records, %d classes; %s split train/val/test = %d/%d/%d%s",
        len(labels),
        len(classes),
        chosen.how,
        len(split.train),
        len(split.val),
        len(split.test),
        " (max_train_samples / max_eval_samples)" if limited else "",
    )
    return PreparedData(dataset, classes, labels, split, chosen.how, leakage)


def write_data_report(cfg: Config, data: PreparedData, tokenizer, run_dir: Path, trackers: Trackers) -> None:
    """data_report.json / .md / .png into the run folder (the split as trained); its findings logged."""
    labels = [data.classes.labels[c] for c in data.labels]
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
