"""``finetune-pipeline inspect-data [overrides]``: the data report before any training.

The same config and overrides as train.py choose the data, the split and the tokenizer; no model is
loaded. Prints the report and writes data_report.json / .md / .png into the source's processed
folder (or --out). Every training run writes the same report into its run folder.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

from finetune_pipeline.artifacts.names import CONFIG_DIR, METRICS_FILE
from finetune_pipeline.errors import PipelineError

log = logging.getLogger("finetune_pipeline")


def add_parser(commands) -> None:
    sub = commands.add_parser(
        "inspect-data",
        help="the data report: classes, duplicates, leakage, conflicts, lengths (no model loaded)",
        description="print the data report of the data train.py would use (the same overrides) and write "
        "data_report.json/.md/.png into the source's processed folder",
    )
    sub.set_defaults(command=inspect_data)
    sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for train.py")
    sub.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the report files go (default: the source's processed folder, data/processed/<name>-<hash>/)",
    )


def compose_config(overrides: list[str]):
    """The typed config train.py would run with these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from finetune_pipeline.config.load import check_override_keys, register_resolvers, to_config
    from finetune_pipeline.config.schema import register_configs
    from finetune_pipeline.paths import conf_dir

    check_override_keys(list(overrides))
    register_configs()
    register_resolvers(datetime.datetime.now())  # conf/ interpolates ${project_root:} and friends
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return to_config(compose(config_name="config", overrides=list(overrides)))
    except (HydraException, OmegaConfBaseException) as e:
        raise PipelineError(str(e).splitlines()[0]) from None


def inspect_data(args: argparse.Namespace) -> None:
    from finetune_pipeline.backbone.load import load_tokenizer, locate_backbone
    from finetune_pipeline.data.choose_split import choose_split
    from finetune_pipeline.data.hf_source import keeps_own_split
    from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined, source_name
    from finetune_pipeline.data.report import build_report
    from finetune_pipeline.data.source import processed_paths
    from finetune_pipeline.training.prepare_data import index_labels, label_names

    cfg = compose_config(args.overrides)
    d = cfg.data
    ensure_preprocessed(d)
    dataset = load_combined(d)
    classes, labels, _ = index_labels(d, dataset)
    chosen = choose_split(d, dataset.files, labels, classes.display_names(), keeps_own_split(d))
    log.info("split: %s (%s)", chosen.how, chosen.why)
    backbone = locate_backbone(cfg.backbone, d.max_length, dataset.texts, dataset.fingerprint)
    tokenizer = load_tokenizer(backbone, cfg.backbone)
    report = build_report(
        source_name(d),
        dataset.texts,
        label_names(classes, labels),
        chosen.split,
        chosen.how,
        tokenizer,
        d.max_length,
        d.leakage.value,
        dataset.duplicates_dropped,
        d.long_text.value,
    )
    out = args.out or processed_paths(d).folder
    if (out / METRICS_FILE).exists() or (out / CONFIG_DIR).exists():
        raise PipelineError(
            f"--out {out}: a run folder; its data report is the run's own record, written when it "
            "trained: choose another folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    files = report.write(out)
    sys.stdout.write(report.markdown())
    for warning in report.warnings():
        log.warning("%s", warning)
    log.info("data report -> %s", ", ".join(str(f) for f in files))
