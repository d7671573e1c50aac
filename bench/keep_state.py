"""``python train.py ...``, keeping a copy of the last ``train_state.pt`` the run writes
(``train_state.kept.pt``; a finished run deletes its own), so benchmarks can report its size."""

import shutil
import sys
from pathlib import Path

import finetune_pipeline.training.recipe as recipe
from finetune_pipeline.cli.train import launch

REPO = Path(__file__).resolve().parents[1]
_save_state = recipe.save_state


def _save_and_keep(path, *args, **kwargs):
    _save_state(path, *args, **kwargs)
    shutil.copyfile(path, Path(path).with_name("train_state.kept.pt"))


if __name__ == "__main__":
    recipe.save_state = _save_and_keep
    sys.argv[0] = str(REPO / "train.py")
    launch(REPO)
