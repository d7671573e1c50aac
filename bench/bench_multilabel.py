"""Multi-label on real pretrained weights: AG News pairs with all-MiniLM-L6-v2, frozen and fine-tuned.

    python bench/bench_multilabel.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en  # ~15 min

The data: in each of the dataset's train / validation / test parts, half the texts stay single (one
label, as a list) and the other half are joined in pairs of two texts of different classes (both
labels). Written as raw parts that keep the dataset's split (``data.split=auto``), with no flag:
the lists make the runs multi-label. ``python train.py`` then trains a frozen head and a full
fine-tuning run; each tunes one threshold per label on validation.

From each run's test predictions (scores with the thresholds folded in: 0.5 is each label's
threshold) the raw sigmoid scores are recovered with the recorded thresholds, and the benchmark
reports micro-F1 with the tuned thresholds and with a fixed 0.5, with 95% bootstrap intervals
(2,000 resamples of the test texts) of each and of their difference, and macro-F1 and subset accuracy.

Results: bench/results/multilabel.json and one line per run on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MINILM_RUNS, REPO, RESAMPLES, interval, machine, run_measured

RUNS = MINILM_RUNS


def pairs_part(records: list[dict], seed: int) -> list[dict]:
    """Half the records single, the other half joined two by two (different classes) into one text."""
    rng = random.Random(seed)
    records = records[:]
    rng.shuffle(records)
    half = len(records) // 2
    out = [{"input": r["input"], "output": [r["output"]]} for r in records[:half]]
    rest = records[half:]
    while len(rest) >= 2:
        a = rest.pop()
        j = next((k for k in range(len(rest) - 1, -1, -1) if rest[k]["output"] != a["output"]), None)
        if j is None:
            break
        b = rest.pop(j)
        out.append({"input": f"{a['input']} {b['input']}", "output": [a["output"], b["output"]]})
    rng.shuffle(out)
    return out


def test_scores(run: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores (N, L) with the thresholds folded in, truth (N, L) 0/1, label names) of the test split."""
    labels = [c["label"] for c in json.loads((run / "id_to_label.json").read_text()).values()]
    rows = [json.loads(x) for x in (run / "evaluation/test/predictions.jsonl").read_text().splitlines() if x]
    scores = np.asarray([[row["scores"][label] for label in labels] for row in rows], dtype=np.float64)
    truth = np.asarray([[int(label in row["true_labels"]) for label in labels] for row in rows])
    return scores, truth, labels


def raw_scores(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The plain sigmoid: the folded-in threshold logits added back."""
    s = np.clip(scores, 1e-12, 1 - 1e-12)
    z = np.log(s / (1 - s)) + np.log(thresholds / (1 - thresholds))
    return 1 / (1 + np.exp(-z))


def micro(y: np.ndarray, decided: np.ndarray) -> float:
    return float(f1_score(y, decided, average="micro", zero_division=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-multilabel"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "multilabel.json")
    parser.add_argument("--only", choices=sorted(RUNS), help="one of the two runs")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    raw = args.workdir / "data" / "raw"
    raw.mkdir(parents=True)
    made = {}
    for i, part in enumerate(sorted(args.dataset.glob("*.json"))):
        records = pairs_part(json.loads(part.read_text(encoding="utf-8")), seed=i)
        (raw / part.name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        made[part.name] = {"texts": len(records), "pairs": sum(len(r["output"]) == 2 for r in records)}
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    common = [
        "backbone=local",
        "backbone.name=all-MiniLM-L6-v2",
        f"backbone.path={args.model.resolve()}",
        f"data.raw_dir={raw}",
        "data.max_length=160",
        "training.best_metric=micro_f1",
        "training.progress_bar=false",
        "logger=none",
    ]
    results = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "resamples": RESAMPLES,
        "parts": made,
        "runs": {},
    }
    rng = np.random.default_rng(0)
    for name, overrides in RUNS.items():
        if args.only and name != args.only:
            continue
        run = args.workdir / "outputs" / name.replace(" ", "-")
        wall, peak_mb, _ = run_measured(
            [sys.executable, str(REPO / "train.py"), *common, *overrides, f"hydra.run.dir={run}"], env
        )
        calibration = json.loads((run / "metrics.json").read_text())["calibration"]
        scores, y, labels = test_scores(run)
        thresholds = np.asarray([calibration["thresholds"][label] for label in labels])
        raw_sigmoid = raw_scores(scores, thresholds)
        tuned, fixed = (scores >= 0.5).astype(int), (raw_sigmoid >= 0.5).astype(int)
        draws = [rng.integers(0, len(y), len(y)) for _ in range(RESAMPLES)]
        tuned_b = np.asarray([micro(y[d], tuned[d]) for d in draws])
        fixed_b = np.asarray([micro(y[d], fixed[d]) for d in draws])
        r = {
            "overrides": overrides,
            "wall_seconds": wall,
            "peak_rss_mb": peak_mb,
            "thresholds": calibration["thresholds"],
            "micro_f1_tuned": micro(y, tuned),
            "micro_f1_fixed": micro(y, fixed),
            "micro_f1_tuned_95": interval(tuned_b),
            "micro_f1_fixed_95": interval(fixed_b),
            "tuned_minus_fixed_95": interval(tuned_b - fixed_b),
            "macro_f1_tuned": float(f1_score(y, tuned, average="macro", zero_division=0)),
            "macro_f1_fixed": float(f1_score(y, fixed, average="macro", zero_division=0)),
            "subset_accuracy_tuned": float((tuned == y).all(axis=1).mean()),
            "subset_accuracy_fixed": float((fixed == y).all(axis=1).mean()),
            "test_texts": len(y),
            "recorded": calibration,
        }
        results["runs"][name] = r
        print(
            f"{name}: micro-F1 tuned {r['micro_f1_tuned']:.4f} {r['micro_f1_tuned_95']} vs 0.5 "
            f"{r['micro_f1_fixed']:.4f} {r['micro_f1_fixed_95']} (difference 95% {r['tuned_minus_fixed_95']}); "
            f"macro-F1 {r['macro_f1_tuned']:.4f} vs {r['macro_f1_fixed']:.4f}; subset accuracy "
            f"{r['subset_accuracy_tuned']:.4f} vs {r['subset_accuracy_fixed']:.4f}; {wall:.0f} s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
