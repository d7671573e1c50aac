"""Train a text classifier over an mmBERT encoder.

    python train.py                                  # mmBERT-base from base_models/mmBERT-base
    python train.py backbone=tiny                    # offline smoke run, tiny random-init ModernBERT
    python train.py training.freeze_backbone=false   # fine-tune the encoder too
    python train.py -m model.hidden_dim=256,512      # a sweep, one folder per job
    python train.py resume=outputs/DATE/TIME         # continue a stopped run where it stopped
    torchrun --nproc_per_node=4 train.py ...         # DistributedDataParallel, one run folder

Config: conf/ (groups data, backbone, model, training, precision); artifacts: Hydra's run folder.
What a run does with its folder (resume, sweep jobs, exit codes): finetune_pipeline/cli/train.py;
the recipe itself: finetune_pipeline/training/recipe.py.
"""

from pathlib import Path

from finetune_pipeline.cli.train import launch

if __name__ == "__main__":
    launch(Path(__file__).resolve().parent)  # relative paths (data/, outputs/) belong to this checkout
