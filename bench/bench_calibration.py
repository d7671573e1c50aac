"""Temperature scaling on real pretrained weights: all-MiniLM-L6-v2 on AG News, frozen and fine-tuned.

    python bench/bench_calibration.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en  # ~8 min

Runs ``python train.py`` (``training.calibration=temperature``, the default) on the dataset's own
train/validation/test parts: a frozen head (20 epochs) and full fine-tuning (2 epochs). From each
run's test predictions (``evaluation/test/predictions.jsonl``, calibrated; the uncalibrated scores
are recovered exactly with the recorded temperature) it reports ECE (15 bins) and NLL before and
after, with 95% bootstrap intervals (2,000 resamples of the 760 test texts) of the ECE before, after
and of their difference, and the accuracy before and after.

Results: bench/results/calibration.json and one line per run on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MINILM_RUNS, REPO, RESAMPLES, interval, machine, run_measured

from finetune_pipeline.evaluation.calibration import ece, nll, rescaled

RUNS = {name: list(overrides) for name, overrides in MINILM_RUNS.items()}  # a copy: --full-epochs edits it


def test_predictions(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities (N, C), true class ids (N,)) in the run's class order."""
    classes = json.loads((run / "id_to_label.json").read_text())
    column = {c["symbol"]: int(i) for i, c in classes.items()}
    rows = [json.loads(line) for line in (run / "evaluation/test/predictions.jsonl").read_text().splitlines()]
    probs = np.zeros((len(rows), len(column)), dtype=np.float32)
    for r, row in enumerate(rows):  # top_k lists every class of a 4-class run
        for entry in row["top_k"]:
            probs[r, column[entry["symbol"]]] = entry["score"]
    return probs, np.asarray([column[row["true_symbol"]] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-calibration"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "calibration.json")
    parser.add_argument("--only", choices=sorted(RUNS), help="one of the two runs")
    parser.add_argument("--full-epochs", type=int, default=2, help="epochs of the full fine-tuning run (default 2)")
    parser.add_argument(
        "--encoder-lr", type=float, default=5e-5, help="encoder learning rate of the full fine-tuning run (5e-5)"
    )
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    common = [
        "backbone=local",
        "backbone.name=all-MiniLM-L6-v2",
        f"backbone.path={args.model.resolve()}",
        f"data.raw_dir={args.dataset.resolve()}",
        "data.max_length=128",
        "training.progress_bar=false",
        "logger=none",
    ]
    results = {"date": date.today().isoformat(), "machine": machine(), "resamples": RESAMPLES, "runs": {}}
    rng = np.random.default_rng(0)
    RUNS["full fine-tuning"][1] = f"training.epochs={args.full_epochs}"
    RUNS["full fine-tuning"][3] = f"training.encoder_learning_rate={args.encoder_lr:g}"
    for name, overrides in RUNS.items():
        if args.only and name != args.only:
            continue
        run = args.workdir / "outputs" / name.replace(" ", "-")
        wall, peak_mb, _ = run_measured(
            [sys.executable, str(REPO / "train.py"), *common, *overrides, f"hydra.run.dir={run}"], env
        )
        calibration = json.loads((run / "metrics.json").read_text())["calibration"]
        after, y = test_predictions(run)
        before = rescaled(after, 1.0 / calibration["temperature"])  # the scores at T = 1
        draws = [rng.integers(0, len(y), len(y)) for _ in range(RESAMPLES)]
        ece_before = np.asarray([ece(before[d], y[d]) for d in draws])
        ece_after = np.asarray([ece(after[d], y[d]) for d in draws])
        r = {
            "overrides": overrides,
            "wall_seconds": wall,
            "peak_rss_mb": peak_mb,
            "temperature": calibration["temperature"],
            "accuracy_before": float((before.argmax(1) == y).mean()),
            "accuracy_after": float((after.argmax(1) == y).mean()),
            "ece_before": ece(before, y),
            "ece_after": ece(after, y),
            "ece_before_95": interval(ece_before),
            "ece_after_95": interval(ece_after),
            "ece_reduction_95": interval(ece_before - ece_after),
            "ece_after_over_before_95": interval(ece_after / np.maximum(ece_before, 1e-12)),
            "nll_before": nll(before, y),
            "nll_after": nll(after, y),
            "recorded": calibration,
        }
        results["runs"][name] = r
        print(
            f"{name}: T={r['temperature']:.3f}; ECE {r['ece_before']:.4f} {r['ece_before_95']} -> "
            f"{r['ece_after']:.4f} {r['ece_after_95']} (after/before 95% {r['ece_after_over_before_95']}); "
            f"NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}; accuracy {r['accuracy_before']:.4f} -> "
            f"{r['accuracy_after']:.4f}; {wall:.0f} s"
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
