"""What the data report costs: AG News (7,600 texts) and Lenta headlines (24,684), with a real tokenizer.

    python bench/bench_data_report.py --datasets <datasets> --tokenizer <models>/all-MiniLM-L6-v2 [--repeats 5]

For each dataset: preprocessing into its own processed folder (once, cold), then ``build_report``
(split chosen by data.split=auto, leakage, duplicates, conflicts, label spellings, token lengths,
scripts) and ``DataReport.write`` (JSON, Markdown, PNG), ``--repeats`` times each; median and range.
No model is loaded (the tokenizer only). Also reports what each report found.

Results: bench/results/data_report.json and one line per figure on stdout.
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
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine
from transformers import AutoTokenizer

from finetune_pipeline.data.choose_split import choose_split
from finetune_pipeline.data.classes import ClassIndex
from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined, source_name
from finetune_pipeline.data.report import build_report


def compose(overrides: list[str]):
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import compose_config

    return compose_config(overrides).data


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return times, value


def spread(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "data_report.json")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    results = {"machine": machine(), "date": date.today().isoformat(), "tokenizer": args.tokenizer.name, "datasets": {}}
    with tempfile.TemporaryDirectory() as root:
        os.environ["FINETUNE_PIPELINE_ROOT"] = root  # processed folders in a scratch project
        for name in ("ag_news_test_en", "lenta_headlines_ru"):
            cfg = compose([f"data.raw_dir={args.datasets / name}", "data.max_length=128"])
            start = time.perf_counter()
            ensure_preprocessed(cfg)
            preprocess_s = time.perf_counter() - start
            dataset = load_combined(cfg)
            classes = ClassIndex.from_dataset(dataset.symbols, dataset.label_to_symbol)
            ids = classes.ids(dataset.symbols)
            chosen = choose_split(cfg, dataset.files, ids, classes.display_names(), keeps_own=False)
            labels = [classes.labels[c] for c in ids]

            report = partial(
                build_report,
                source_name(cfg),
                dataset.texts,
                labels,
                chosen.split,
                chosen.how,
                tokenizer,
                cfg.max_length,
                "warn",
                dataset.duplicates_dropped,
            )
            build_times, built = timed(report, args.repeats)
            folder = Path(root) / "reports" / name
            folder.mkdir(parents=True)
            write_times, _ = timed(lambda built=built, folder=folder: built.write(folder), args.repeats)
            results["datasets"][name] = {
                "texts": len(dataset.texts),
                "split": chosen.how,
                "preprocess_cold_s": preprocess_s,
                "build_report": spread(build_times),
                "write_json_md_png": spread(write_times),
                "found": {
                    "leakage": built.leakage["cross_split"],
                    "conflicts": built.conflicts["count"],
                    "within_split_duplicates": built.duplicates["within_split"]["count"],
                    "truncated_share": built.lengths["truncated_share"],
                    "label_spellings": built.labels,
                    "scripts": built.scripts,
                },
            }
            r = results["datasets"][name]
            print(
                f"{name}: {r['texts']} texts, split {r['split']}; preprocess {preprocess_s:.2f} s; report "
                f"{r['build_report']['median_s']:.2f} s (range {r['build_report']['min_s']:.2f}-"
                f"{r['build_report']['max_s']:.2f}, {args.repeats} runs); write "
                f"{r['write_json_md_png']['median_s']:.2f} s; leakage {built.leakage['cross_split']['count']}, "
                f"conflicts {built.conflicts['count']}"
            )
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
