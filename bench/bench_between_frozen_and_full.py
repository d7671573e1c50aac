"""Between frozen and full: head only, top-1 and top-2 layers, LoRA, full fine-tuning, side by side.

    python bench/bench_between_frozen_and_full.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en

One ``train.py`` process per mode, one after the other, on AG News with ``data.split=files``
(6,080 / 760 / 760), all-MiniLM-L6-v2, max_length 128, batch 32, precision auto: test accuracy, wall
time end to end (process start to exit), peak RSS, ``best_model.pt`` size, and the training state's
size (``train_state.pt`` as written at the last save before the run finished and deleted it:
recorded by a copy taken at the end of the last epoch). Epochs per mode: --epochs (defaults below).
Results: printed as Markdown and written to bench/results/between_frozen_and_full.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

MODES = {
    "frozen head": (["training.freeze_backbone=true"], 5),
    "top-1 layer": (["adapter=top_layers", "adapter.top_layers.layers=1"], 3),
    "top-2 layers": (["adapter=top_layers", "adapter.top_layers.layers=2"], 3),
    "LoRA r=8": (["adapter=lora"], 1),
    "full fine-tuning": (["training.freeze_backbone=false"], 1),
    "LoRA r=8, 3 epochs": (["adapter=lora"], 3),
    "full fine-tuning, 3 epochs": (["training.freeze_backbone=false"], 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-between"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    out = REPO / "bench" / "results" / "between_frozen_and_full.json"
    results: dict = {"date": date.today().isoformat(), "machine": machine(), "modes": {}}
    if out.is_file() and set(args.modes) != set(MODES):  # a partial run adds to the same day's figures
        earlier = json.loads(out.read_text())
        if earlier.get("date") == results["date"]:
            results["modes"] = {k: v for k, v in earlier["modes"].items() if k not in args.modes}
    for name in args.modes:
        overrides, epochs = MODES[name]
        run = args.workdir / "runs" / name.replace(" ", "-").replace("=", "").replace(",", "")
        seconds, rss, _ = run_measured(
            [
                sys.executable,
                str(REPO / "bench" / "keep_state.py"),
                "backbone=local",
                "backbone.name=all-MiniLM-L6-v2",
                f"backbone.path={args.model.resolve()}",
                f"data.raw_dir={args.dataset.resolve()}",
                "data.split=files",
                "data.max_length=128",
                "training.batch_size=32",
                f"training.epochs={epochs}",
                "logger=none",
                "training.progress_bar=false",
                f"hydra.run.dir={run}",
                *overrides,
            ],
            env,
        )
        metrics = json.loads((run / "metrics.json").read_text())
        proof = json.loads((run / "freeze_proof.json").read_text())
        kept = run / "train_state.kept.pt"
        results["modes"][name] = {
            "epochs": epochs,
            "test_accuracy": metrics["test"]["test/accuracy"],
            "wall_seconds": seconds,
            "peak_rss_mb": rss,
            "checkpoint_bytes": (run / "best_model.pt").stat().st_size,
            "training_state_bytes": kept.stat().st_size if kept.is_file() else None,
            "trainable_parameters": proof["trainable_parameters"],
            "verdict": proof["verdict"],
            "features": metrics.get("features"),
        }
        print(name, {k: v for k, v in results["modes"][name].items() if k != "features"}, flush=True)
        out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def markdown(r: dict) -> str:
    full = r["modes"].get("full fine-tuning, 3 epochs") or r["modes"].get("full fine-tuning")
    rows = [
        f"Measured {r['date']} on {r['machine']}.",
        "",
        "| mode | epochs | test accuracy | wall s | vs full | peak RSS MB | checkpoint | vs full | training state |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r["modes"].items():
        state = f"{m['training_state_bytes'] / 1e6:.1f} MB" if m["training_state_bytes"] else "-"
        rows.append(
            f"| {name} | {m['epochs']} | {100 * m['test_accuracy']:.2f}% | {m['wall_seconds']:.0f} | "
            f"{m['wall_seconds'] / full['wall_seconds']:.2f}x | {m['peak_rss_mb']:.0f} | "
            f"{m['checkpoint_bytes'] / 1e6:.2f} MB | {m['checkpoint_bytes'] / full['checkpoint_bytes']:.2%} | "
            f"{state} |"
            if full
            else f"| {name} | {m['epochs']} | {100 * m['test_accuracy']:.2f}% | "
            f"{m['wall_seconds']:.0f} | - | {m['peak_rss_mb']:.0f} | {m['checkpoint_bytes'] / 1e6:.2f} MB | - | {state} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
