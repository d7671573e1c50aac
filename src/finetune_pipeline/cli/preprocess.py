"""Run preprocessing alone, with the same config and overrides as train.py.

finetune-preprocess [overrides]            e.g. finetune-preprocess data.raw_dir=/data/news
python -m finetune_pipeline.cli.preprocess [overrides]
"""

from __future__ import annotations

import argparse
import datetime
import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from finetune_pipeline.cli.errors import exit_status
from finetune_pipeline.config.load import register_resolvers, to_config
from finetune_pipeline.config.schema import register_configs
from finetune_pipeline.data.preprocess import ensure_preprocessed
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import conf_dir
from finetune_pipeline.runtime.logs import log_to_stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="finetune-preprocess",
        description="Merge the raw parts of data.raw_dir (or a Hugging Face dataset) into the combined dataset "
        "and the label -> symbol mapping in the source's processed folder (data/processed/<name>-<hash>/, or "
        "data.dataset_path / data.label_mapping_path), as train.py does before training.",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, as for train.py (e.g. data.raw_dir=/data/news)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    log_to_stderr()
    register_configs()
    register_resolvers(datetime.datetime.now())  # conf/ interpolates ${project_root:} and friends

    def command() -> None:
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose(config_name="config", overrides=args.overrides)
        except (HydraException, OmegaConfBaseException) as e:
            raise PipelineError(str(e).splitlines()[0]) from None
        ensure_preprocessed(to_config(cfg).data, force=True)

    return exit_status(
        command,
        "during preprocessing; the combined dataset and mapping are as before or complete "
        "(each file is replaced whole); run the command again",
    )


if __name__ == "__main__":
    sys.exit(main())
