"""Write a stratified subset of a dataset folder as raw parts for the pipeline (never committed).

python bench/make_subset.py <datasets>/lenta_headlines_ru data/bench/lenta_small/raw --per-class 20
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-class", type=int, required=True, help="records taken from each class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    by_label = defaultdict(list)
    for part in sorted(args.dataset_dir.glob("*.json")):
        for record in json.loads(part.read_text(encoding="utf-8")):
            by_label[record["output"]].append(record)
    rnd = random.Random(args.seed)
    subset = [
        r for label in sorted(by_label) for r in rnd.sample(by_label[label], min(args.per_class, len(by_label[label])))
    ]
    rnd.shuffle(subset)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    half = len(subset) // 2
    for i, chunk in enumerate((subset[:half], subset[half:]), start=1):
        (args.out_dir / f"part-{i}.json").write_text(json.dumps(chunk, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{args.out_dir}: {len(subset)} records, {len(by_label)} classes")


if __name__ == "__main__":
    main()
