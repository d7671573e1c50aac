"""The mmBERT-base stand-in in every training mode: seconds per optimizer step, peak RSS, checkpoint
and training-state size, side by side in one run.

    python bench/bench_standin_modes.py <backbones>/mmBERT-base [--stand-in DIR]

Builds the random-init stand-in (bench/make_standin.py) unless --stand-in names one, then one
``train.py`` process per mode on the project's data/raw (256 train texts), data.max_length=64,
batch 16, one epoch (16 optimizer steps), precision auto. Seconds per optimizer step = the epoch's
training seconds (metrics.json history, the encoding pass of the cached modes excluded) / its
steps. The training state is the last ``train_state.pt`` written (kept by bench/keep_state.py).
Results: printed as Markdown and written to bench/results/standin_modes.json.
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

MODES = {
    "frozen head": ["training.freeze_backbone=true"],
    "top-2 layers": ["adapter=top_layers", "adapter.top_layers.layers=2"],
    "LoRA r=8": ["adapter=lora"],
    "full fine-tuning": ["training.freeze_backbone=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_dir", type=Path)
    parser.add_argument("--stand-in", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-standin-modes"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    shutil.copytree(REPO / "data" / "raw", args.workdir / "data" / "raw")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    standin = args.stand_in or args.workdir / "mmbert-standin"
    if not args.stand_in:
        run_measured(
            [
                sys.executable,
                "bench/make_standin.py",
                str(args.config_dir),
                str(standin),
                "--texts",
                str(REPO / "data" / "raw"),
            ],
            env,
        )
    results: dict = {"date": date.today().isoformat(), "machine": machine(), "modes": {}}
    for name, overrides in MODES.items():
        run = args.workdir / "runs" / name.replace(" ", "-").replace("=", "")
        seconds, rss, _ = run_measured(
            [
                sys.executable,
                str(REPO / "bench" / "keep_state.py"),
                f"backbone.path={standin}",
                "data.max_length=64",
                "training.batch_size=16",
                "training.epochs=1",
                "logger=none",
                "training.progress_bar=false",
                f"hydra.run.dir={run}",
                *overrides,
            ],
            env,
        )
        metrics = json.loads((run / "metrics.json").read_text())
        epoch = metrics["history"][0]
        kept = run / "train_state.kept.pt"
        results["modes"][name] = {
            "seconds_per_optimizer_step": epoch["epoch_seconds"] / epoch["opt_steps"],
            "opt_steps": epoch["opt_steps"],
            "wall_seconds": seconds,
            "peak_rss_mb": rss,
            "checkpoint_bytes": (run / "best_model.pt").stat().st_size,
            "training_state_bytes": kept.stat().st_size if kept.is_file() else None,
            "verdict": json.loads((run / "freeze_proof.json").read_text())["verdict"],
        }
        print(name, results["modes"][name], flush=True)
    (REPO / "bench" / "results" / "standin_modes.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    rows = [
        f"Measured {results['date']} on {results['machine']}.",
        "",
        "| mode | s per optimizer step | wall s | peak RSS MB | checkpoint | training state |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["modes"].items():
        state = f"{m['training_state_bytes'] / 1e6:.0f} MB" if m["training_state_bytes"] else "-"
        rows.append(
            f"| {name} | {m['seconds_per_optimizer_step']:.2f} | {m['wall_seconds']:.0f} | {m['peak_rss_mb']:.0f} | "
            f"{m['checkpoint_bytes'] / 1e6:.1f} MB | {state} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
