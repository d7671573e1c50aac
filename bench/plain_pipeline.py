"""transformers' text-classification pipeline on an HF folder, in a process without finetune_pipeline.

    python -I bench/plain_pipeline.py HF_FOLDER TEXTS.jsonl fp32|bf16 [MAX_LENGTH]

Prints one JSON line: the label of each text. Run by bench/bench_peers.py (the peer of ``predict``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import pipeline


def main() -> None:
    folder, texts_file, dtype = sys.argv[1:4]
    max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    texts = [json.loads(line) for line in Path(texts_file).read_text(encoding="utf-8").splitlines()]
    kwargs = {"dtype": torch.bfloat16} if dtype == "bf16" else {}
    classify = pipeline("text-classification", model=folder, trust_remote_code=True, device="cpu", **kwargs)
    out = classify(texts, batch_size=32, truncation=True, max_length=max_length)
    assert not any(m.startswith("finetune_pipeline") for m in sys.modules), "finetune_pipeline was imported"
    print(json.dumps({"labels": [o["label"] for o in out]}))


if __name__ == "__main__":
    main()
