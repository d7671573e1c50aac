"""Long documents: data.long_text=truncate vs chunk (mean and max pooling), accuracy and cost.

    python bench/bench_long_texts.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en

Documents are built from the AG News parts (train part -> train, validation -> val, test -> test),
each of --texts-per-doc texts, in two ways:

- ``same_class``: texts of one class, concatenated (every part of the document bears its label);
- ``label_at_end``: texts of random classes, then one text of the document's class last: only the
  end bears the label, which truncation to --max-length tokens never sees.

A frozen all-MiniLM-L6-v2 run (data.split=files, --epochs) per setting, one process each, one after
the other: test accuracy, wall time, and the encoding pass's windows and seconds (metrics.json).
Results: printed as Markdown and written to bench/results/long_texts.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

PARTS = {"train": "part-1-train.json", "validation": "part-2-validation.json", "test": "part-3-test.json"}


def build(dataset: Path, out: Path, kind: str, per_doc: int, limit: dict[str, int], seed: int) -> None:
    rnd = random.Random(seed)
    out.mkdir(parents=True)
    for split, name in PARTS.items():
        records = json.loads((dataset / name).read_text(encoding="utf-8"))
        by_label: dict[str, list[str]] = {}
        for r in records:
            by_label.setdefault(r["output"], []).append(r["input"])
        docs = []
        for _ in range(limit[split]):
            label = rnd.choice(sorted(by_label))
            if kind == "same_class":
                texts = rnd.sample(by_label[label], per_doc)
            else:
                texts = [rnd.choice(records)["input"] for _ in range(per_doc - 1)] + [rnd.choice(by_label[label])]
            docs.append({"input": "\n".join(texts), "output": label})
        (out / f"{kind}-{split}.json").write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--texts-per-doc", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--docs", type=int, nargs=3, default=[1600, 300, 400], metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-long"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    limit = dict(zip(PARTS, args.docs))
    results: dict = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "texts_per_doc": args.texts_per_doc,
        "max_length": args.max_length,
        "stride": args.stride,
        "epochs": args.epochs,
        "docs": limit,
    }
    settings = {
        "truncate": [],
        "chunk mean": ["data.long_text=chunk", "data.chunk_pooling=mean"],
        "chunk max": ["data.long_text=chunk", "data.chunk_pooling=max"],
    }
    for kind in ("same_class", "label_at_end"):
        raw = args.workdir / kind / "raw"
        build(args.dataset, raw, kind, args.texts_per_doc, limit, seed=1)
        results[kind] = {}
        for name, extra in settings.items():
            run = args.workdir / kind / "runs" / name.replace(" ", "-")
            seconds, rss, _ = run_measured(
                [
                    sys.executable,
                    "train.py",
                    "backbone=local",
                    "backbone.name=all-MiniLM-L6-v2",
                    f"backbone.path={args.model.resolve()}",
                    f"data.raw_dir={raw}",
                    "data.split=files",
                    f"data.dataset_path={args.workdir / kind / 'processed' / 'combined.json'}",
                    f"data.label_mapping_path={args.workdir / kind / 'processed' / 'mapping.json'}",
                    f"data.max_length={args.max_length}",
                    f"data.chunk_stride={args.stride}",
                    f"training.epochs={args.epochs}",
                    "training.batch_size=32",
                    "logger=none",
                    "training.progress_bar=false",
                    f"hydra.run.dir={run}",
                    *extra,
                ],
                env,
            )
            metrics = json.loads((run / "metrics.json").read_text())
            encoding = metrics["features"]["encoding"]
            results[kind][name] = {
                "test_accuracy": metrics["test"]["test/accuracy"],
                "test_macro_f1": metrics["test"]["test/macro_f1"],
                "wall_seconds": seconds,
                "peak_rss_mb": rss,
                "encoded_windows": _windows(encoding),
                "encoding_seconds": encoding["seconds"],
                "padded_tokens": encoding["padded_tokens"],
            }
            print(kind, name, results[kind][name], flush=True)
    out = REPO / "bench" / "results" / "long_texts.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def _windows(encoding: dict) -> int:
    return encoding.get("windows", encoding["texts"])


def markdown(r: dict) -> str:
    rows = [
        f"Measured {r['date']} on {r['machine']}; documents of {r['texts_per_doc']} AG News texts, "
        f"max_length {r['max_length']}, stride {r['stride']}, {r['docs']} documents, frozen all-MiniLM-L6-v2, "
        f"{r['epochs']} epochs.",
        "",
    ]
    for kind in ("same_class", "label_at_end"):
        base = r[kind]["truncate"]
        rows += [
            f"**{kind}**",
            "",
            "| setting | test accuracy | macro-F1 | windows encoded | encoding s | wall s | vs truncate |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in r[kind].items():
            rows.append(
                f"| {name} | {100 * m['test_accuracy']:.1f}% | {100 * m['test_macro_f1']:.1f} | "
                f"{m['encoded_windows']} | {m['encoding_seconds']:.1f} | {m['wall_seconds']:.1f} | "
                f"{m['wall_seconds'] / base['wall_seconds']:.2f}x |"
            )
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
