"""Cost of resumability and of prediction on the full-size mmBERT-base stand-in.

1. Fine-tuning (the heaviest training state): start `train.py`, let it save `train_state.pt`
   every 4 optimizer steps, send SIGTERM after the first save, then `resume=` the run to the end.
   Records the state's size, how long a save takes, the exit status, and the resumed run's result.
2. Prediction: train a frozen head, then `Classifier.from_run(...).predict` all texts of the
   subset; records load time and texts/s.

    python bench/bench_resume_predict.py base_models/mmBERT-base-standin   # ~8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, machine, run_measured

SAVED = re.compile(r"training state saved \((.+?)\): .* \(([\d.]+) MB in ([\d.]+) s\)")


def stop_and_resume(standin: Path, env: dict) -> dict:
    args = [
        sys.executable,
        "train.py",
        "backbone=local",
        f"backbone.path={standin}",
        "data=lenta_small",
        "training.freeze_backbone=false",
        "training.epochs=1",
        "training.batch_size=8",
        "training.save_every_steps=4",
        "training.progress_bar=false",
        "precision=fp32",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if SAVED.search(line):
            proc.send_signal(signal.SIGTERM)  # stop right after the first periodic save
            break
    lines += proc.stdout.readlines()
    status = proc.wait()
    stopped_after = time.perf_counter() - started
    out = "".join(lines)
    saves = [(m.group(1), float(m.group(2)), float(m.group(3))) for m in SAVED.finditer(out)]
    run_dir = re.search(r"resume=(\S+)", out).group(1)
    seconds, rss, resumed_out = run_measured([sys.executable, "train.py", f"resume={run_dir}"], env)
    metrics = json.loads((REPO / run_dir / "metrics.json").read_text())
    resumed_at = re.search(r"resuming at (epoch \d+, batch \d+/\d+)", resumed_out).group(1)
    return {
        "exit_status_after_sigterm": status,
        "seconds_until_stopped": stopped_after,
        "saves": saves,
        "resumed_at": resumed_at,
        "resume_run_seconds": seconds,
        "resume_run_peak_rss_mb": rss,
        "finished_epochs": len(metrics["history"]),
        "state_left": (REPO / run_dir / "train_state.pt").exists(),
    }


def predict_speed(standin: Path, env: dict) -> dict:
    args = [
        sys.executable,
        "train.py",
        "backbone=local",
        f"backbone.path={standin}",
        "data=lenta_small",
        "training.epochs=1",
        "training.progress_bar=false",
        "precision=fp32",
    ]
    _, _, out = run_measured(args, env)
    run_dir = REPO / re.search(r"artifacts written to (\S+)", out).group(1)
    texts = [
        r["input"]
        for p in sorted((REPO / "data/bench/lenta_small/raw").glob("*.json"))
        for r in json.loads(p.read_text(encoding="utf-8"))
    ]
    from finetune_pipeline import Classifier

    started = time.perf_counter()
    clf = Classifier.from_run(run_dir, precision="fp32")
    loaded = time.perf_counter() - started
    calls = []
    for _ in range(3):  # the first call pays one-off kernel set-up
        started = time.perf_counter()
        predictions = clf.predict(texts)
        calls.append(time.perf_counter() - started)
    return {
        "texts": len(predictions),
        "load_seconds": loaded,
        "predict_seconds_per_call": calls,
        "texts_per_second_first_call": len(texts) / calls[0],
        "texts_per_second_best_of_later_calls": len(texts) / min(calls[1:]),
        "checkpoint": "head_only (hash verified on load)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("standin", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/resume_predict.json")
    parser.add_argument("--predict-only", action="store_true", help="keep the resume part of --out as it is")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = {"date": dt.date.today().isoformat(), "machine": machine()}
    result["resume"] = (
        json.loads(args.out.read_text())["resume"]
        if args.predict_only
        else stop_and_resume(args.standin.resolve(), env)
    )
    result["predict"] = predict_speed(args.standin.resolve(), env)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
