"""``metrics.json``: the run's numbers, one typed record that writes the file and reads it back.

The recipe writes it; ``finetune-compare``, the sweep summary, the Optuna objective, the benchmarks
and the tests read it through ``RunMetrics.read``, so the JSON contract lives here only.

    {"summary":  {"best/epoch", "best/val/<metric>", "test/loss", "test/accuracy", "test/macro_f1"},
     "history":  [{"epoch", "train/loss", "val/loss", "val/accuracy", "val/macro_f1", "opt_steps",
                   "epoch_seconds", "train/texts_per_second"}, ...],
     "best":     {"metric": "val/<metric>", "value", "epoch", "stopped_early"},
     "test":     {"test/loss", "test/accuracy", "test/macro_f1", "test/weighted_f1",
                  "per_class": {label: {"symbol", "precision", "recall", "f1", "support"}}},
     "data", "backbone", "features", "loss", "device", "processes", "precision",
     "timings":  {"setup_seconds", "train_seconds", "test_seconds", "total_seconds"},
     "provenance": {"git": {"commit", "dirty"} | null, "python", "packages": {name: version}, "cpu",
                    "gpu", "command"}}

Non-finite numbers are written as ``null`` (strict JSON) and read back as None.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.artifacts.names import METRICS_FILE
from finetune_pipeline.errors import PipelineError


@dataclass(frozen=True)
class BestEpoch:
    metric: str  # "val/macro_f1", "val/accuracy" or "val/loss"
    value: float | None
    epoch: int
    stopped_early: bool = False


@dataclass(frozen=True)
class RunMetrics:
    summary: dict
    history: list[dict]
    best: BestEpoch
    test: dict
    data: dict
    backbone: dict
    features: dict
    loss: dict
    device: str
    processes: int
    precision: str
    timings: dict
    provenance: dict = dataclasses.field(default_factory=dict)  # git commit, versions, machine, command
    # temperature scaling: method, temperature, val_nll_before/after, and on test ece_before/after, nll_before/after
    calibration: dict = dataclasses.field(default_factory=dict)

    def write(self, run_dir: Path) -> None:
        write_json(run_dir / METRICS_FILE, dataclasses.asdict(self))

    @classmethod
    def read(cls, run_dir: Path) -> RunMetrics:
        """The run's record; one line naming the file when it is unreadable or incomplete."""
        path = run_dir / METRICS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))  # an older bare NaN reads as nan
            fields = {f.name for f in dataclasses.fields(cls)} & (raw.keys() | _REQUIRED)
            missing = sorted(_REQUIRED - raw.keys())
            if missing:
                raise KeyError(f"missing {', '.join(missing)}")
            best = BestEpoch(**raw["best"])
            return cls(**{k: raw[k] for k in fields if k != "best"}, best=best)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(f"{path}: unreadable run record ({type(e).__name__}: {e})") from None

    @property
    def test_accuracy(self) -> float | None:
        return finite(self.test.get("test/accuracy"))

    @property
    def test_macro_f1(self) -> float | None:
        return finite(self.test.get("test/macro_f1"))

    @property
    def best_value(self) -> float | None:
        return finite(self.best.value)

    @property
    def total_seconds(self) -> float | None:
        return finite(self.timings.get("total_seconds"))

    def diverged(self) -> bool:
        """A value a finished run must have is missing or not finite (records of older versions)."""
        losses = [self.test.get("test/loss")] + [e.get("train/loss") for e in self.history]
        needed = [self.best_value, self.test_accuracy, self.test_macro_f1]
        return any(v is None for v in needed) or any(v is not None and finite(v) is None for v in losses)


_REQUIRED = {
    f.name
    for f in dataclasses.fields(RunMetrics)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
}


def finite(value: object) -> float | None:
    """A finite number, else None (JSON null, NaN, ±inf, or not a number at all)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
