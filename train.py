"""Train a text classifier over an mmBERT encoder.

    python train.py                                  # mmBERT-base from base_models/mmBERT-base
    python train.py backbone=tiny                    # offline smoke run, tiny random-init ModernBERT
    python train.py training.freeze_backbone=false   # fine-tune the encoder too
    python train.py -m model.hidden_dim=256,512      # a sweep, one folder per job
    python train.py resume=outputs/DATE/TIME         # continue a stopped run where it stopped
    torchrun --nproc_per_node=4 train.py ...         # DistributedDataParallel, one run folder

Config: conf/ (groups data, backbone, model, training, precision); artifacts: Hydra's run folder.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from finetune_pipeline import app, distributed
from finetune_pipeline.config.load import register_resolvers
from finetune_pipeline.config.schema import register_configs
from finetune_pipeline.paths import ROOT_ENV

# relative paths (data/, base_models/, outputs/) belong to the checkout this script lives in, even
# when the package was installed from another one
os.environ.setdefault(ROOT_ENV, str(Path(__file__).resolve().parent))
register_configs()
register_resolvers()
dist = distributed.init_from_env()  # under torchrun: join the ranks, agree on the run folder's name


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Returns the best validation value of training.best_metric (the objective for sweepers)."""
    return app.run(cfg, dist, sys.argv[0])


if __name__ == "__main__":
    distributed.run_then_exit(main)
