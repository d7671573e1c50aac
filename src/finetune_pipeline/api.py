"""Training from Python (a notebook, a script), as ``python train.py OVERRIDES`` does:

    import finetune_pipeline

    run = finetune_pipeline.train(["backbone=tiny", "training.epochs=2"])
    run.folder                          # outputs/<date>/<time>/, the same artifacts as train.py's
    run.metrics.summary["test/macro_f1"]
    clf = finetune_pipeline.Classifier.from_run(run.folder)

The same ``conf/``, schema, checks, run folder (with its ``.hydra/`` record, so ``resume=``,
``finetune-compare`` and exports treat it as any run) and guarantees; a bad override raises
``PipelineError`` (``ConfigError`` for an unknown key or a missing value) before any folder is made.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.metrics_record import RunMetrics
from finetune_pipeline.errors import PipelineError, RunFolderRefused


@dataclass(frozen=True)
class TrainedRun:
    folder: Path  # the run folder, as train.py would have made it
    metrics: RunMetrics  # its metrics.json


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> TrainedRun:
    """Train one run with these config overrides (``resume=<folder>`` continues a stopped one);
    ``run_dir``: the run folder (default: ``outputs/<date>/<time>``, as ``hydra.run.dir`` says)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from finetune_pipeline.artifacts.run_folder import write_config_record
    from finetune_pipeline.cli.train import forget_failed_start
    from finetune_pipeline.config.load import (
        check_override_keys,
        check_single_run,
        register_resolvers,
        stored_config,
        to_config,
    )
    from finetune_pipeline.config.renamed import check_overrides
    from finetune_pipeline.config.schema import register_configs
    from finetune_pipeline.paths import conf_dir
    from finetune_pipeline.training.recipe import train as train_run

    if isinstance(overrides, (str, bytes)):  # a string would be iterated as one override per character
        raise PipelineError(f"overrides is a list of strings, e.g. train([{overrides!r}]), not one string")
    overrides = [str(o) for o in overrides]
    check_overrides(overrides)
    check_override_keys(overrides)
    check_single_run(overrides, api=True)
    register_configs()
    register_resolvers(datetime.datetime.now())
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    hydra_node = composed.hydra
    task = OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"])
    folder = Path(run_dir) if run_dir is not None else Path(str(hydra_node.run.dir))
    resume = OmegaConf.select(task, "resume")
    if resume is not None:
        config = stored_config(Path(str(resume)), [o for o in overrides if not o.startswith("resume=")])
        folder = Path(str(resume))
    else:
        config = to_config(task)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        train_run(
            config,
            folder,
            resume=resume is not None,
            record=None if resume is not None else lambda f: write_config_record(f, task, hydra_node, overrides),
        )
    except PipelineError as e:
        if resume is None and not isinstance(e, RunFolderRefused):
            forget_failed_start(folder)  # as train.py: a run that failed before its artifacts leaves no folder
        raise
    return TrainedRun(folder, RunMetrics.read(folder))
