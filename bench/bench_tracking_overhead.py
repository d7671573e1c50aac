"""What tracking costs: ``logger=mlflow`` against ``logger=none``, side by side in one run.

    python bench/bench_tracking_overhead.py [--model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en]

- a frozen tiny-backbone sweep of 4 jobs (``python train.py -m model.hidden_dim=8,16,32,64``),
  alternating none / mlflow, ``--repeats`` times each, after one warm-up sweep of each (tiny
  backbone, feature cache, the MLflow store and the Python files in the page cache); the figure is
  the difference of the median wall times per job (target: at most 0.5 s per job);
- with --model/--dataset, one frozen MiniLM run of each on AG News (``data.split=files``), each
  with its own empty feature cache so both encode the 7,600 texts (target: at most 2% of the wall time).

Every command is a fresh ``python train.py`` process, so the figures include importing MLflow.
Results: printed as Markdown and written to bench/results/tracking_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

LOGGERS = ("none", "mlflow")
SWEEP = [
    "-m",
    "backbone=tiny",
    "model.hidden_dim=8,16,32,64",
    "training.epochs=3",
    "data.max_length=64",
    "precision=fp32",
    "training.progress_bar=false",
]
MINILM = [
    "training.freeze_backbone=true",
    "training.epochs=5",
    "training.batch_size=64",
    "data.max_length=128",
    "data.split=files",
    "precision=fp32",
    "training.progress_bar=false",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="e.g. <models>/all-MiniLM-L6-v2")
    parser.add_argument("--dataset", type=Path, help="e.g. <datasets>/ag_news_test_en")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-tracking"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    shutil.copytree(REPO / "data" / "raw", args.workdir / "data" / "raw")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    train = [sys.executable, "train.py"]
    results: dict = {"date": date.today().isoformat(), "machine": machine(), "sweep": {}, "minilm": {}}

    sweep_seconds: dict[str, list[float]] = {name: [] for name in LOGGERS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in LOGGERS:
            seconds, _, _ = run_measured([*train, *SWEEP, f"logger={name}"], env)
            print(f"sweep logger={name}: {seconds:.1f} s{' (warm-up)' if repeat == 0 else ''}", flush=True)
            if repeat:
                sweep_seconds[name].append(seconds)
    median = {name: statistics.median(v) for name, v in sweep_seconds.items()}
    results["sweep"] = {
        "jobs": 4,
        "seconds": sweep_seconds,
        "median_seconds": median,
        "overhead_seconds_per_job": (median["mlflow"] - median["none"]) / 4,
    }

    if args.model and args.dataset:
        common = [
            "backbone=local",
            "backbone.name=all-MiniLM-L6-v2",
            f"backbone.path={args.model.resolve()}",
            f"data.raw_dir={args.dataset.resolve()}",
            *MINILM,
        ]
        for name in LOGGERS:
            cache = args.workdir / f"cache-{name}"  # each run encodes: the same work on both sides
            seconds, rss, _ = run_measured([*train, *common, f"data.cache_dir={cache}", f"logger={name}"], env)
            results["minilm"][name] = {"wall_seconds": seconds, "peak_rss_mb": rss}
            print(f"MiniLM logger={name}: {seconds:.1f} s", flush=True)
        none, tracked = results["minilm"]["none"]["wall_seconds"], results["minilm"]["mlflow"]["wall_seconds"]
        results["minilm"]["overhead_fraction"] = (tracked - none) / none

    out = REPO / "bench" / "results" / "tracking_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def markdown(r: dict) -> str:
    s = r["sweep"]
    rows = [
        f"Measured {r['date']} on {r['machine']}.",
        "",
        "| workload | logger=none | logger=mlflow | overhead |",
        "|---|---|---|---|",
        f"| frozen tiny-backbone sweep, 4 jobs, median of {len(s['seconds']['none'])} | "
        f"{s['median_seconds']['none']:.2f} s | {s['median_seconds']['mlflow']:.2f} s | "
        f"{s['overhead_seconds_per_job']:+.2f} s per job |",
    ]
    if r["minilm"]:
        m = r["minilm"]
        rows.append(
            f"| frozen all-MiniLM-L6-v2 run on AG News (7,600 texts encoded, 5 epochs) | "
            f"{m['none']['wall_seconds']:.1f} s | {m['mlflow']['wall_seconds']:.1f} s | "
            f"{100 * m['overhead_fraction']:+.1f}% |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
