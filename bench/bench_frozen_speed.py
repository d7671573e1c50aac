"""Frozen-backbone speed: a reference loop written as the original pipeline's against this pipeline, side by side, one run.

    python bench/make_standin.py <backbones>/mmBERT-base base_models/mmBERT-base-standin \
        --texts <datasets>/lenta_headlines_ru          # once, ~1 min
    python bench/bench_frozen_speed.py --dataset <datasets>/lenta_headlines_ru --records 600   # ~10 min, 2 cores

Measured, on the same data (a stratified subset of Lenta.ru headlines) and the same full-size
random-init mmBERT-base stand-in:

1. a frozen sweep of 4 head configurations x 3 epochs, end to end: the reference loop (encoder
   forward on every batch of every epoch, padded to max_length, fp32, model loaded per job, as the
   original pipeline's scripts) against ``python train.py -m ...`` (one process, fresh feature cache);
2. raw encoder throughput (``model(**batch)`` under inference mode on the pipeline's own batches
   and precision) against the pipeline's encoding pass, fp32 and bf16;
3. real against padded tokens, for both;
4. peak RSS of a single frozen ``python train.py`` run (cache miss: it loads, hashes and encodes).

Results: printed as Markdown and written to bench/results/frozen_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from finetune_pipeline.config.schema import MixedPrecision, Pooling
from finetune_pipeline.data.batches import TokenizedTexts, eval_loader
from finetune_pipeline.data.split import stratified_split
from finetune_pipeline.features.encode import encode
from finetune_pipeline.model.classifier import build_head, pool
from finetune_pipeline.runtime.precision import cpu_supports_bf16, resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

SWEEP = {"model.hidden_dim": [256, 512], "model.dropout": [0.1, 0.3]}  # 4 head configurations
EPOCHS, BATCH, MAX_LENGTH, LR = 3, 16, 64, 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standin", type=Path, default=REPO / "base_models/mmBERT-base-standin")
    parser.add_argument("--dataset", type=Path, required=True, help="e.g. <datasets>/lenta_headlines_ru")
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-frozen"))
    args = parser.parse_args()
    if not (args.standin / "config.json").is_file():
        sys.exit(f"{args.standin}: no stand-in; build it with bench/make_standin.py (see this file's docstring)")

    texts, labels = subset(args.dataset, args.records)
    shutil.rmtree(args.workdir, ignore_errors=True)
    (args.workdir / "data/raw").mkdir(parents=True)
    raw = [{"input": t, "output": y} for t, y in zip(texts, labels)]
    (args.workdir / "data/raw/part-1.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")

    results = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "records": len(texts),
        "max_length": MAX_LENGTH,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "sweep": SWEEP,
    }
    print(f"pipeline sweep: {len(texts)} records, 4 configs x {EPOCHS} epochs ...", flush=True)
    results["pipeline"] = pipeline_sweep(args.workdir, args.standin)
    print(f"  {results['pipeline']['seconds']:.0f} s", flush=True)
    print("reference sweep (seed-style) ...", flush=True)
    results["reference"] = reference_sweep(args.standin, texts, labels)
    print(f"  {results['reference']['seconds']:.0f} s", flush=True)
    results["speedup"] = results["reference"]["seconds"] / results["pipeline"]["seconds"]
    results["throughput"] = throughput(args.standin, texts)
    results["single_run_peak_rss_mb"] = single_run_rss(args.workdir, args.standin)

    out = REPO / "bench/results/frozen_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def subset(dataset: Path, n: int) -> tuple[list[str], list[str]]:
    """About ``n`` records, classes in their real proportions but at least 6 each (16 rubrics, 0.3%..17%)."""
    records = [r for p in sorted(dataset.glob("*.json")) for r in json.loads(p.read_text(encoding="utf-8"))]
    by_label: dict[str, list[str]] = {}
    for r in records:
        by_label.setdefault(r["output"], []).append(r["input"])
    rnd = random.Random(0)
    picked = [
        (t, label)
        for label, texts in sorted(by_label.items())
        for t in rnd.sample(texts, max(6, round(n * len(texts) / len(records))))
    ]
    rnd.shuffle(picked)
    return [t for t, _ in picked], [label for _, label in picked]


def pipeline_sweep(workdir: Path, standin: Path) -> dict:
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(workdir), "HF_HUB_OFFLINE": "1"}
    sweep = [f"{k}={','.join(map(str, v))}" for k, v in SWEEP.items()]
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        f"backbone.path={standin}",
        f"data.max_length={MAX_LENGTH}",
        f"training.epochs={EPOCHS}",
        f"training.batch_size={BATCH}",
        "training.progress_bar=false",
        *sweep,
    ]
    seconds, rss, _out = run_measured(cmd, env)
    runs = sorted((workdir / "outputs/multirun").rglob("metrics.json"))
    metrics = [json.loads(p.read_text()) for p in runs]
    encoding = next(m["features"]["encoding"] for m in metrics if "encoding" in m["features"])
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "jobs": len(runs),
        "precision": metrics[0]["precision"],
        "cache": [m["features"]["cache"] for m in metrics],
        "encoding": encoding,
        "test_accuracy": [m["test"]["test/accuracy"] for m in metrics],
    }


class Reference:
    """The original pipeline's frozen loop: pad to max_length, fp32, the encoder runs on every batch of every epoch."""

    def __init__(self, standin: Path, hidden_dim: int, dropout: float, classes: int):
        self.tokenizer = AutoTokenizer.from_pretrained(standin)
        self.encoder = AutoModel.from_pretrained(standin).float().eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.head = build_head(self.encoder.config.hidden_size, hidden_dim, classes, dropout)
        self.real = self.padded = 0

    def batches(self, texts: list[str], labels: list[int], shuffle: bool):
        order = torch.randperm(len(texts)).tolist() if shuffle else list(range(len(texts)))
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            enc = self.tokenizer(
                [texts[j] for j in idx],
                padding="max_length",
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            self.real += int(enc["attention_mask"].sum())
            self.padded += enc["attention_mask"].numel()
            yield enc, torch.tensor([labels[j] for j in idx])

    def logits(self, enc) -> torch.Tensor:
        hidden = self.encoder(**enc).last_hidden_state  # (B, max_length, H): padding included
        return self.head(pool(hidden, enc["attention_mask"], Pooling.mean))

    def accuracy(self, texts, labels) -> float:
        self.head.eval()
        with torch.no_grad():
            hits = sum((self.logits(enc).argmax(-1) == y).sum().item() for enc, y in self.batches(texts, labels, False))
        return hits / len(texts)

    def fit(self, train, val, test) -> float:
        opt = torch.optim.AdamW(self.head.parameters(), lr=LR)
        for _ in range(EPOCHS):
            self.head.train()
            for enc, y in self.batches(*train, shuffle=True):
                loss = nn.functional.cross_entropy(self.logits(enc), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
            self.accuracy(*val)
        return self.accuracy(*test)


def reference_sweep(standin: Path, texts: list[str], labels: list[str]) -> dict:
    names = sorted(set(labels))
    y = [names.index(label) for label in labels]
    parts = stratified_split(y, 0.8, 0.1, 42, dict(enumerate(names)))  # the pipeline's split, same records
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (([texts[i] for i in p], [y[i] for i in p]) for p in parts)
    torch.manual_seed(0)
    start, accuracies, real, padded = time.perf_counter(), [], 0, 0
    for hidden_dim in SWEEP["model.hidden_dim"]:
        for dropout in SWEEP["model.dropout"]:
            job = Reference(standin, hidden_dim, dropout, len(names))  # each original-pipeline run loads its model
            accuracies.append(job.fit((tr_x, tr_y), (va_x, va_y), (te_x, te_y)))
            real, padded = real + job.real, padded + job.padded
            del job
    return {
        "seconds": time.perf_counter() - start,
        "test_accuracy": accuracies,
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_share": 1 - real / padded,
    }


@torch.inference_mode()
def throughput(standin: Path, texts: list[str]) -> dict:
    """Raw ``model(**batch)`` on the pipeline's own batches vs the pipeline's encoding pass."""
    tokenizer = AutoTokenizer.from_pretrained(standin)
    encoder = AutoModel.from_pretrained(standin).float().eval()
    data = TokenizedTexts(texts, [0] * len(texts), tokenizer, MAX_LENGTH)
    batches = [
        {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        for b in eval_loader(data, 128, 0, tokenizer.pad_token_id, max_tokens=8192)
    ]
    out = {}
    names = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    for name in names:
        precision = resolve_precision(MixedPrecision(name), torch.device("cpu"))
        raw, piped = [], []
        for _ in range(2):  # alternate, keep the best of each: the machine is noisy
            with precision.autocast():
                encoder(**batches[-1])  # warm-up
                start = time.perf_counter()
                for batch in batches:
                    encoder(**batch)
                raw.append(time.perf_counter() - start)
            _, stats = encode(
                encoder, data, Pooling.mean, precision, torch.device("cpu"), 128, 8192, tokenizer.pad_token_id
            )
            piped.append(stats.seconds)
        out[name] = {
            "raw_texts_per_second": len(texts) / min(raw),
            "pipeline_texts_per_second": len(texts) / min(piped),
            "pipeline_share_of_raw": min(raw) / min(piped),
            "padding_share": stats.padding_share,
            "batches": len(batches),
        }
    return out


def single_run_rss(workdir: Path, standin: Path) -> float:
    shutil.rmtree(workdir / "data/cache", ignore_errors=True)  # a cold run: load, hash, encode
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(workdir), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "train.py",
        f"backbone.path={standin}",
        f"data.max_length={MAX_LENGTH}",
        "training.progress_bar=false",
    ]
    return run_measured(cmd, env)[1]


def markdown(r: dict) -> str:
    p, ref, t = r["pipeline"], r["reference"], r["throughput"]
    rows = [
        f"Measured {r['date']} on {r['machine']}; {r['records']} Lenta.ru headlines, max_length {r['max_length']}, "
        f"batch {r['batch_size']}, full-size random-init mmBERT-base stand-in.",
        "",
        "| frozen sweep, 4 head configs x 3 epochs, end to end | wall | peak RSS | padding share | test accuracy (random weights) |",
        "|---|---|---|---|---|",
        f"| reference (seed-style: encoder every batch, pad to max_length, fp32) | {ref['seconds']:.0f} s | in-process | "
        f"{100 * ref['padding_share']:.1f}% | {', '.join(f'{a:.3f}' for a in ref['test_accuracy'])} |",
        f"| pipeline (`python train.py -m`, {p['precision']}, cold cache) | {p['seconds']:.0f} s | {p['peak_rss_mb']:.0f} MB | "
        f"{100 * p['encoding']['padding_share']:.1f}% | {', '.join(f'{a:.3f}' for a in p['test_accuracy'])} |",
        "",
        f"Speed-up: **{r['speedup']:.1f}x**. Cache per job: {', '.join(p['cache'])}.",
        "",
        "| precision | raw `model(**batch)` texts/s | pipeline encoding pass texts/s | pipeline / raw | padding share |",
        "|---|---|---|---|---|",
        *[
            f"| {k} | {v['raw_texts_per_second']:.1f} | {v['pipeline_texts_per_second']:.1f} | "
            f"{100 * v['pipeline_share_of_raw']:.0f}% | {100 * v['padding_share']:.1f}% |"
            for k, v in t.items()
        ],
        "",
        f"Peak RSS of one cold frozen `python train.py` run on the stand-in: {r['single_run_peak_rss_mb']:.0f} MB.",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
