"""The frozen and predict leads over the tools users would otherwise reach for, end to end, one run.

    pip install sentence-transformers   # the peer of the frozen run (not a project dependency)
    python bench/bench_peers.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en
    # ~10 min on 2 cores with --repeats 3

Same data for every arm: the raw folder of ``bench_vs_trainer.py`` (a seeded 2,000 texts of the
train part, the 760 validation and 760 test texts), and for prediction 2,280 other train texts.

Frozen encoder, a classifier on top:
- ``ours, frozen``: ``train.py training.freeze_backbone=true`` (the MiniLM frozen-head settings of
  ``bench/common.py``: 20 epochs, MLP head), a cold feature cache and ``training.seed=round`` every
  round.
- ``ours, frozen, encoding unpacked``: the same with the encoding pass's bf16 linear weights left
  unpacked (``prepacking_available`` switched off; what the pass ran before 2026-12-05).
- ``sentence-transformers + LR``: ``SentenceTransformer(model).encode`` of the three parts
  (its defaults: batch 32, length-sorted, fp32; and ``--st-bf16`` adds a bf16 arm) and scikit-learn
  ``LogisticRegression`` with C picked on the validation part (0.1, 1, 10).

Prediction with the trained frozen run, 2,280 texts, each a fresh process from start to exit:
- ``finetune-pipeline predict RUN --input texts.jsonl --output out.jsonl`` (default engine).
- ``transformers.pipeline("text-classification", HF export folder, trust_remote_code=True)`` called
  with ``batch_size=32, truncation=True``, fp32 and bf16 (``dtype=torch.bfloat16``), in a process
  that never imports finetune_pipeline (``bench/plain_pipeline.py``).

Every arm is timed from process start to exit (wall), round robin over ``--repeats`` rounds; the
leads are per-round ratios. Results: bench/results/peers.json and Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_trainer import MAX_LENGTH, UNPACKED, minilm_on, write_data
from common import MINILM_RUNS, REPO, machine, run_measured

PREDICT_TEXTS = 2280


def sentence_transformers_main(model: Path, raw: Path, dtype: str) -> None:
    """Encode the three parts with sentence-transformers, fit logistic regression; one JSON line."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    parts = {
        split: json.loads((raw / f"part-{i}-{split}.json").read_text(encoding="utf-8"))
        for i, split in ((1, "train"), (2, "validation"), (3, "test"))
    }
    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bf16" else {}
    encoder = SentenceTransformer(str(model), device="cpu", **kwargs)
    encoder.max_seq_length = MAX_LENGTH
    x = {s: encoder.encode([r["input"] for r in rs], batch_size=32).astype(np.float32) for s, rs in parts.items()}
    y = {s: np.array([r["output"] for r in rs]) for s, rs in parts.items()}
    fits = {c: LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"]) for c in (0.1, 1.0, 10.0)}
    c = max(fits, key=lambda c: fits[c].score(x["validation"], y["validation"]))
    print(json.dumps({"C": c, "test_accuracy": float(fits[c].score(x["test"], y["test"]))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--st-bf16", action="store_true", help="also sentence-transformers with bf16 weights")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-peers"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "peers.json")
    parser.add_argument("--st-run", nargs=2, help=argparse.SUPPRESS)  # internal: raw folder, dtype
    args = parser.parse_args()
    if args.st_run:
        sentence_transformers_main(args.model, Path(args.st_run[0]), args.st_run[1])
        return

    shutil.rmtree(args.workdir, ignore_errors=True)
    raw = args.workdir / "raw"
    write_data(args.dataset, raw, 2000)
    used = {r["input"] for p in raw.glob("part-*.json") for r in json.loads(p.read_text(encoding="utf-8"))}
    spare = [r["input"] for r in json.loads((args.dataset / "part-1-train.json").read_text(encoding="utf-8"))]
    spare = [t for t in spare if t not in used]
    random.Random(1).shuffle(spare)
    texts_file = args.workdir / "predict.jsonl"
    texts_file.write_text("".join(json.dumps(t) + "\n" for t in spare[:PREDICT_TEXTS]), encoding="utf-8")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    me = [sys.executable, __file__, "--model", str(args.model), "--dataset", str(args.dataset)]
    train = [
        sys.executable,
        str(REPO / "train.py"),
        *minilm_on(args.model, raw),
        *MINILM_RUNS["frozen head"],
        "training.progress_bar=false",
        "logger=none",
    ]
    # the same run with the encoding pass's linear weights left unpacked (as before 2026-12-05)
    unpacked = [sys.executable, "-c", UNPACKED, *train[2:]]
    st_arms = ["fp32", "bf16"] if args.st_bf16 else ["fp32"]
    rows: dict[str, list[dict]] = {}
    run = None
    for round_ in range(args.repeats):
        target = args.workdir / "outputs" / f"frozen-{round_}"
        cache = args.workdir / f"cache-{round_}"  # cold: every round encodes again
        seed = f"training.seed={round_ + 1}"  # seeds differ by round: the head's seed spread
        for name, cmd in (("ours, frozen", train), ("ours, frozen, encoding unpacked", unpacked)):
            folder = target if name == "ours, frozen" else target.with_name(f"{target.name}-unpacked")
            shutil.rmtree(cache, ignore_errors=True)
            wall, peak, _ = run_measured([*cmd, seed, f"data.cache_dir={cache}", f"hydra.run.dir={folder}"], env)
            metrics = json.loads((folder / "metrics.json").read_text())
            rows.setdefault(name, []).append(
                {
                    "wall": wall,
                    "peak_mb": peak,
                    "test_accuracy": metrics["test"]["test/accuracy"],
                    "encoding_seconds": metrics["features"]["encoding"]["seconds"],
                }
            )
        for dtype in st_arms:
            wall, peak, out = run_measured([*me, "--st-run", str(raw), dtype], env)
            rows.setdefault(f"sentence-transformers {dtype} + LR", []).append(
                {"wall": wall, "peak_mb": peak, **json.loads(out.strip().splitlines()[-1])}
            )
        if run is None:  # the run every prediction arm classifies with, and its HF export
            run = target
            run_measured([sys.executable, "-m", "finetune_pipeline", "export", str(run), "--format", "hf"], env)
        predicted = args.workdir / f"predicted-{round_}.jsonl"
        cmd = [sys.executable, "-m", "finetune_pipeline", "predict", str(run), "--input", str(texts_file)]
        wall, peak, _ = run_measured([*cmd, "--output", str(predicted)], env)
        ours_labels = [json.loads(line)["label"] for line in predicted.read_text(encoding="utf-8").splitlines()]
        rows.setdefault("ours, predict", []).append({"wall": wall, "peak_mb": peak})
        for dtype in ("fp32", "bf16"):
            plain = [sys.executable, "-I", str(REPO / "bench" / "plain_pipeline.py"), str(run / "export" / "hf")]
            wall, peak, out = run_measured([*plain, str(texts_file), dtype, str(MAX_LENGTH)], env)
            labels = json.loads(out.strip().splitlines()[-1])["labels"]
            same = sum(a == b for a, b in zip(labels, ours_labels, strict=True)) / len(labels)
            rows.setdefault(f"transformers pipeline {dtype}", []).append(
                {"wall": wall, "peak_mb": peak, "same_label": same}
            )
        print(f"round {round_ + 1} done", file=sys.stderr)

    def over(peer: str, mine: str) -> list[float]:
        return [p["wall"] / m["wall"] for p, m in zip(rows[peer], rows[mine], strict=True)]

    frozen_peers = [p for p in rows if p.startswith("sentence") or p.endswith("unpacked")]
    leads = {f"{peer} / ours, frozen": over(peer, "ours, frozen") for peer in frozen_peers}
    leads |= {
        f"{peer} / ours, predict": over(peer, "ours, predict") for peer in rows if peer.startswith("transformers")
    }
    results = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "predict_texts": PREDICT_TEXTS,
        "repeats": args.repeats,
        "runs": rows,
        "wall_ratio_per_round": leads,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| arm | wall s (median, range) | test accuracy | same label as ours |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        walls = sorted(r["wall"] for r in runs)
        accs = [r["test_accuracy"] for r in runs if "test_accuracy" in r]
        same = [r["same_label"] for r in runs if "same_label" in r]
        acc = f"{min(accs):.4f}-{max(accs):.4f}" if accs else "-"
        print(
            f"| {name} | {statistics.median(walls):.1f} ({walls[0]:.1f}-{walls[-1]:.1f}) | {acc} | "
            f"{f'{min(same):.1%}' if same else '-'} |"
        )
    for name, ratios in leads.items():
        print(f"{name}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f} by round)")


if __name__ == "__main__":
    main()
