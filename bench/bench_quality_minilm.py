"""Quality with real pretrained weights: all-MiniLM-L6-v2 on AG News (English), frozen head vs full fine-tuning.

    python bench/bench_quality_minilm.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en  # ~15 min, 2 cores

Runs ``python train.py`` twice on <datasets>/ag_news_test_en (7,600 records) with
<models>/all-MiniLM-L6-v2, keeping the dataset's own parts as train/val/test
(``data.split=files``, as the reference figures in <datasets>/README.md do):

- frozen: mean-pooled features cached once, MLP head trained for 30 epochs (seconds per epoch);
- full fine-tuning: encoder and head, 3 epochs;
- a baseline on the frozen run's own cached features and split: scikit-learn logistic regression
  (standardised features, C picked on the validation part).

Results: printed as Markdown and written to bench/results/quality_minilm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

RUNS = {
    "frozen head": [
        "training.freeze_backbone=true",
        "training.epochs=30",
        "training.learning_rate=1e-3",
        "training.batch_size=64",
        "model.hidden_dim=512",
        "model.dropout=0.1",
    ],
    "full fine-tuning": [
        "training.freeze_backbone=false",
        "training.epochs=3",
        "training.learning_rate=1e-3",
        "training.encoder_learning_rate=5e-5",
        "training.batch_size=32",
        "model.hidden_dim=512",
        "model.dropout=0.1",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="e.g. <models>/all-MiniLM-L6-v2")
    parser.add_argument("--dataset", type=Path, required=True, help="e.g. <datasets>/ag_news_test_en")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-quality"))
    parser.add_argument("--only", choices=sorted(RUNS), help="run one of the two")
    parser.add_argument(
        "--split",
        choices=["files", "stratified"],
        default="files",
        help="files: the dataset's own parts (default); stratified: the pipeline's 80/10/10 re-split",
    )
    args = parser.parse_args()
    for path in (args.model, args.dataset):
        if not path.is_dir():
            sys.exit(f"{path}: not found")

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    common = [
        "backbone=local",
        "backbone.name=all-MiniLM-L6-v2",
        f"backbone.path={args.model.resolve()}",
        f"data.raw_dir={args.dataset.resolve()}",
        "data.max_length=128",
        f"data.split={args.split}",
        "training.progress_bar=false",
    ]
    results = {"date": date.today().isoformat(), "machine": machine(), "split": args.split, "runs": {}}
    for name, overrides in RUNS.items():
        if args.only and name != args.only:
            continue
        print(f"{name} ...", flush=True)
        run_dir = args.workdir / "outputs" / name.replace(" ", "-")
        seconds, rss, _ = run_measured(
            [sys.executable, "train.py", *common, *overrides, f"hydra.run.dir={run_dir}"], env
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results["runs"][name] = {
            "run": str(run_dir),
            "overrides": overrides,
            "wall_seconds": seconds,
            "peak_rss_mb": rss,
            "test_accuracy": metrics["test"]["test/accuracy"],
            "test_macro_f1": metrics["test"]["test/macro_f1"],
            "best_epoch": metrics["best"]["epoch"],
            "precision": metrics["precision"],
            "records": metrics["data"],
        }
        print(f"  {seconds:.0f} s, test accuracy {metrics['test']['test/accuracy']:.4f}", flush=True)
        if metrics["features"].get("key"):
            results["logistic_regression_probe"] = probe(args.workdir, metrics["features"]["key"], args.split)

    out = REPO / "bench/results/quality_minilm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def probe(workdir: Path, key: str, split: str) -> dict:
    """Logistic regression on the frozen run's cached features, same records and split."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from finetune_pipeline.data.split import split_by_files, stratified_split

    features = torch.load(workdir / f"data/cache/features/{key}.pt", weights_only=True)["features"].numpy()
    processed = workdir / "data/combined_processed"
    records = json.loads((processed / "combined_dataset.json").read_text(encoding="utf-8"))
    meta = json.loads((processed / "preprocess_meta.json").read_text(encoding="utf-8"))
    y = np.array([ord(r["output"][0]) for r in records])  # 4 classes: single-letter symbols
    files = [meta["record_files"]["names"][i] for i in meta["record_files"]["index"]]
    tr, va, te = split_by_files(files) if split == "files" else stratified_split(y.tolist(), 0.8, 0.1, 42, {})
    scaler = StandardScaler().fit(features[tr])
    x = scaler.transform(features)
    fits = {c: LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr]) for c in (0.01, 0.1, 1.0)}
    c, clf = max(fits.items(), key=lambda kv: (kv[1].predict(x[va]) == y[va]).mean())
    return {
        "C": c,
        "val_accuracy": float((clf.predict(x[va]) == y[va]).mean()),
        "test_accuracy": float((clf.predict(x[te]) == y[te]).mean()),
    }


def markdown(r: dict) -> str:
    rows = [
        f"Measured {r['date']} on {r['machine']}; split: {r['split']}.",
        "",
        "| run | test accuracy | test macro-F1 | best epoch | wall time | peak RSS | precision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["runs"].items():
        rows.append(
            f"| {name} | {100 * v['test_accuracy']:.1f}% | {100 * v['test_macro_f1']:.1f} | {v['best_epoch']} | "
            f"{v['wall_seconds']:.0f} s | {v['peak_rss_mb']:.0f} MB | {v['precision']} |"
        )
    if "logistic_regression_probe" in r:
        p = r["logistic_regression_probe"]
        rows.append(
            f"| baseline: logistic regression on the same cached features (C={p['C']}) | "
            f"{100 * p['test_accuracy']:.1f}% | | | | | |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
