"""What verifying an export's manifest costs, on a full-size (1.2 GB) Hugging Face export.

    python bench/bench_manifest_check.py --standin-config <backbones>/mmBERT-base [--workdir /tmp/manifest-bench]

1. The mmBERT-base stand-in (random init, bench/make_standin.py), a frozen 1-epoch run on the
   project's data/raw, exported with --format hf (model.safetensors about 1.2 GB).
2. ``inference.manifest.verify`` on the folder: without a remembered verification (every file hashed;
   the files are in the page cache after the export, so this is the hashing cost, not the disk's),
   and with one (sizes and modification times compared), 3 times each; beside it the time
   ``Classifier.from_pretrained`` takes to load the folder, which now includes the check.

Results: bench/results/manifest_check.json and one line per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

from finetune_pipeline import Classifier
from finetune_pipeline.inference.manifest import verify


def timed(fn, repeats: int = 3) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--standin-config", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/manifest-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    standin, run = args.workdir / "mmbert-standin", args.workdir / "run"
    if not (standin / "config.json").is_file():
        run_measured(
            [
                sys.executable,
                "bench/make_standin.py",
                str(args.standin_config),
                str(standin),
                "--texts",
                str(REPO / "data" / "raw"),
            ],
            env,
        )
    if not (run / "export" / "hf" / "export.json").is_file():
        run_measured(
            [
                sys.executable,
                "train.py",
                f"backbone.path={standin}",
                "training.epochs=1",
                "logger=none",
                "training.progress_bar=false",
                f"hydra.run.dir={run}",
            ],
            env,
        )
        run_measured([sys.executable, "-m", "finetune_pipeline", "export", str(run), "--format", "hf"], env)
    folder = run / "export" / "hf"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as cache:
        memo = Path(cache)
        cold = timed(lambda: (memo.joinpath("export_manifests.json").unlink(missing_ok=True), verify(folder, memo)))
        cached = timed(lambda: verify(folder, memo))
    os.environ["FINETUNE_PIPELINE_CACHE"] = tempfile.mkdtemp()
    load_first = timed(lambda: Classifier.from_pretrained(folder, device="cpu", precision="fp32"), repeats=1)
    load_again = timed(lambda: Classifier.from_pretrained(folder, device="cpu", precision="fp32"), repeats=2)
    result = {
        "date": str(date.today()),
        "machine": machine(),
        "export_bytes": size,
        "verify_without_memo_seconds": cold,
        "verify_remembered_seconds": cached,
        "from_pretrained_first_seconds": load_first,
        "from_pretrained_again_seconds": load_again,
    }
    (REPO / "bench" / "results" / "manifest_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(
        f"export {size / 1e9:.2f} GB; verify without memo: median {statistics.median(cold):.2f} s "
        f"({min(cold):.2f}-{max(cold):.2f}); remembered: median {statistics.median(cached) * 1e3:.2f} ms "
        f"({min(cached) * 1e3:.2f}-{max(cached) * 1e3:.2f}); from_pretrained first {load_first[0]:.2f} s, "
        f"again {statistics.median(load_again):.2f} s"
    )


if __name__ == "__main__":
    main()
