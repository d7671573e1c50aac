"""``training.compile``: ``torch.compile`` (inductor) of the model a training step runs.

``true`` compiles the classifier's forward in place (``nn.Module.compile``: the parameters, the
state dict and the checkpoints stay those of the eager model), with dynamic shapes so that
length-grouped batches do not recompile for every length. Only paths that run an encoder per batch
are compiled; a head over cached features is a few small matmuls. Inductor's on-disk cache lives
in ``<data.cache_dir>/torchinductor`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so later runs
and sweep jobs reuse the compiled kernels. ``auto`` is off: on the 2-core CPUs this project is
measured on, compiled steps were slower than eager ones even with a warm cache
(docs/benchmarks.md, "Full fine-tuning against the Hugging Face Trainer; torch.compile; ...");
no GPU measurement decides it there yet.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from finetune_pipeline.config.schema import TrainingPath

log = logging.getLogger(__name__)

_set_here: list[str | None] = [None]  # the cache folder this process chose last


def compile_wanted(setting: str) -> bool:
    """``training.compile`` as a decision (the value is checked at start-up; ``auto`` is off, see above)."""
    return str(setting).lower() == "true"


def compile_model(model: nn.Module, setting: str, path: TrainingPath, cache_dir: Path) -> bool:
    """Compile ``model`` in place when asked and its path runs an encoder; whether it was compiled."""
    if not compile_wanted(setting):
        return False
    if path is TrainingPath.cached_features:
        log.info("training.compile=true: not applied, the head trains over cached features")
        return False
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # importing transformers' models already fills in inductor's default (/tmp/torchinductor_<user>);
    # a value the user set is kept, one this process set for an earlier run is replaced
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir()), _set_here[0]):
        _set_here[0] = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve() / "torchinductor")
    model.compile(dynamic=True)
    log.info(
        "torch.compile (inductor, dynamic shapes): the first steps compile; kernels cached in %s",
        os.environ["TORCHINDUCTOR_CACHE_DIR"],
    )
    return True
