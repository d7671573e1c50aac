"""Run preprocessing alone, with the same config and overrides as train.py.

    finetune-preprocess [overrides]            e.g. finetune-preprocess data.raw_dir=/data/news
    python -m finetune_pipeline.data.preprocess_cli [overrides]
"""

from __future__ import annotations

import argparse
import logging
import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from finetune_pipeline.config.load import register_resolvers, to_config
from finetune_pipeline.config.schema import register_configs
from finetune_pipeline.data.preprocess import preprocess
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import project_root
from finetune_pipeline.training.interrupt import Stopped, raise_on_signals

log = logging.getLogger("finetune_pipeline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="finetune-preprocess",
        description="Merge the raw JSON parts of data.raw_dir into the combined dataset and the label -> symbol "
                    "mapping (data.dataset_path, data.label_mapping_path), as train.py does before training.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, as for train.py (e.g. data.raw_dir=/data/news)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    register_configs()
    register_resolvers()
    try:
        with raise_on_signals():
            with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=args.overrides)
            preprocess(to_config(cfg).data)
    except (PipelineError, HydraException, OmegaConfBaseException) as e:
        log.error("%s", str(e).splitlines()[0])
        return 1
    except Stopped as e:
        log.error("%s during preprocessing; the combined dataset and mapping are as before or complete (each file "
                  "is replaced whole); run the command again", e)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
