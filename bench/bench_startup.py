"""Start-up: what a command costs before and around its work, measured side by side.

    python bench/bench_startup.py            # ~3 min on 2 cores

Each command runs 5 times in turn (round robin, so a slow minute hits all of them), in a fresh
project folder with the shipped data and ``backbone=tiny`` (cached after the first run): the bare
interpreter, ``import torch``, transformers' model classes, ``train.py`` refusing an unknown key
(checked before Hydra), refusing a bad value (after Hydra's composition), a whole tiny run (cached
features, 1 epoch, no tracker), and ``predict`` of 4 texts on that run. Median and range in seconds.

Results: bench/results/startup.json and a Markdown table on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

ROUNDS = 5
TINY = ["backbone=tiny", "training.epochs=1", "data.max_length=32", "logger=none"]


def main() -> None:
    project = Path(tempfile.mkdtemp(prefix="finetune-bench-startup-"))
    shutil.copytree(REPO / "data" / "raw", project / "data" / "raw")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    train = [sys.executable, str(REPO / "train.py")]
    subprocess.run([*train, *TINY], cwd=project, env=env, capture_output=True, check=True)  # builds tiny + cache
    run = sorted(p.parent for p in (project / "outputs").glob("2*/*/metrics.json"))[-1]
    texts = ["Central bank raises rates", "Сборная вышла в финал", "New phone chip", "Elections next week"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import torch": [sys.executable, "-c", "import torch"],
        "import transformers' AutoModel": [sys.executable, "-c", "from transformers import AutoModel"],
        "train.py training.epoch=3 (unknown key)": [*train, "training.epoch=3"],
        "train.py data.train_ratio=0.95 (bad value)": [*train, "data.train_ratio=0.95"],
        "train.py backbone=tiny, 1 epoch (whole run)": [*train, *TINY],
        "predict 4 texts (--text)": [
            sys.executable,
            "-m",
            "finetune_pipeline",
            "predict",
            str(run),
            *[arg for t in texts for arg in ("--text", t)],
        ],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, cmd in commands.items():
            started = time.perf_counter()
            subprocess.run(cmd, cwd=project, env=env, capture_output=True)
            seconds[name].append(time.perf_counter() - started)
    results = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "rounds": ROUNDS,
        "seconds": {name: sorted(values) for name, values in seconds.items()},
    }
    out = REPO / "bench" / "results" / "startup.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("| command | median s | range |\n|---|---|---|")
    for name, values in seconds.items():
        v = sorted(values)
        print(f"| {name} | {v[len(v) // 2]:.2f} | {v[0]:.2f}-{v[-1]:.2f} |")
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
