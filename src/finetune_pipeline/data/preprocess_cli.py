"""Run preprocessing alone, with the same config and overrides as train.py.

    python -m finetune_pipeline.data.preprocess_cli [data.raw_dir=...]
    finetune-preprocess [overrides]
"""

from __future__ import annotations

import logging
import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from finetune_pipeline.config.load import register_resolvers
from finetune_pipeline.config.schema import register_configs
from finetune_pipeline.data.preprocess import preprocess
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import project_root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    register_configs()
    register_resolvers()
    overrides = sys.argv[1:] if argv is None else argv
    try:
        with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        preprocess(OmegaConf.to_object(cfg.data))
    except (PipelineError, HydraException, OmegaConfBaseException) as e:
        logging.getLogger("finetune_pipeline").error("%s", str(e).splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
