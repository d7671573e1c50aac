"""Synthetic raw data for GPU throughput runs: 4,000 texts of 6 same-topic sentences of data/raw each.

python bench/make_synthetic_texts.py /tmp/synth      # then data.raw_dir=/tmp/synth
"""

import json
import random
import sys
from pathlib import Path

random.seed(0)
rows = [
    json.loads(line)
    for p in sorted(Path("data/raw").glob("*.jsonl"))
    for line in p.read_text().splitlines()
    if line.strip()
]
rows += [r for p in sorted(Path("data/raw").glob("*.json")) for r in json.loads(p.read_text())]
by = {}
for r in rows:
    by.setdefault(r["output"], []).append(r["input"])
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
data = [
    {"input": " ".join(random.choices(by[lab], k=6)) + f" #{i}", "output": lab}
    for i in range(4000)
    for lab in [random.choice(sorted(by))]
]
(out / "synth.json").write_text(json.dumps(data, ensure_ascii=False))
print(len(data), "texts")
