"""Would packing a server's few mixed-length texts into shared rows beat padded batches? (an experiment)

A server fed one text per request batches a random handful of texts; padded to the longest of each
(length-sorted cut, ``data.batches.sorted_batches``) a good part of every forward pass is padding.
Packing puts several texts into one row (first-fit decreasing, rows of ``--row-tokens``), with a
block-diagonal attention mask and positions restarting at each text, so the linear layers see
(almost) only real tokens. This script measures both on random groups of 8, 16 and 32 texts, and the
shipped padded path on all texts in one call (what offline ``predict`` does), and checks that the
packed text vectors equal the padded ones. The encoder is a BERT-style one (all-MiniLM-L6-v2 run):
ModernBERT's local-attention layers would need a second, windowed block mask per layer, which the
Hugging Face model does not take, so packing is not in the package.

    python bench/bench_packed_batches.py /tmp/finetune-bench-engines/minilm --texts <datasets>/ag_news_test_en/part-3-test.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

from finetune_pipeline import Classifier
from finetune_pipeline.data.batches import sorted_batches


def padded_vectors(encoder, ids: list[list[int]]) -> torch.Tensor:
    """(N, H) mean-pooled vectors, padded batches as the package cuts them."""
    out = torch.zeros(len(ids), encoder.config.hidden_size)
    for rows in sorted_batches([len(x) for x in ids], 64):
        longest = max(len(ids[i]) for i in rows)
        x = torch.zeros(len(rows), longest, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for r, i in enumerate(rows):
            x[r, : len(ids[i])], mask[r, : len(ids[i])] = torch.tensor(ids[i]), 1
        hidden = encoder(input_ids=x, attention_mask=mask).last_hidden_state  # (B, T, H)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out[rows] = ((hidden * m).sum(1) / m.sum(1)).float()
    return out


def packed_vectors(encoder, ids: list[list[int]], row_tokens: int) -> torch.Tensor:
    """(N, H) mean-pooled vectors, texts packed into rows with a block-diagonal mask."""
    rows: list[list[int]] = []  # text indices per row, first-fit decreasing
    room: list[int] = []
    for i in sorted(range(len(ids)), key=lambda i: -len(ids[i])):
        r = next((r for r, free in enumerate(room) if free >= len(ids[i])), None)
        if r is None:
            rows.append([]), room.append(max(row_tokens, len(ids[i])))
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= len(ids[i])
    width = max(sum(len(ids[i]) for i in row) for row in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)  # (R, T)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    segment = torch.full((len(rows), width), -1)  # which text of the row each token is; -1 padding
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            n = len(ids[i])
            x[r, at : at + n], positions[r, at : at + n], segment[r, at : at + n] = (
                torch.tensor(ids[i]),
                torch.arange(n),
                k,
            )
            at += n
    block = (segment.unsqueeze(2) == segment.unsqueeze(1)) & (segment.unsqueeze(2) >= 0)  # (R, T, T)
    block |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no all-masked row
    hidden = encoder(input_ids=x, position_ids=positions, attention_mask=block.unsqueeze(1)).last_hidden_state
    out = torch.zeros(len(ids), encoder.config.hidden_size)
    for r, row in enumerate(rows):
        for k, i in enumerate(row):
            out[i] = hidden[r][segment[r] == k].float().mean(0)
    return out


def texts_per_second(fn, ids: list[list[int]], group: int) -> float:
    fn(ids[:group])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(ids), group):
        fn(ids[i : i + group])
    return len(ids) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder of a BERT-style encoder")
    parser.add_argument("--texts", type=Path, required=True, help="a raw JSON part ({input, output} records)")
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--row-tokens", type=int, default=128)
    args = parser.parse_args()
    clf = Classifier.from_run(args.run)
    texts = [r["input"] for r in json.loads(args.texts.read_text(encoding="utf-8"))][: args.count]
    random.Random(0).shuffle(texts)
    ids = clf.tokenizer(texts, truncation=True, max_length=clf.max_length)["input_ids"]
    encoder = clf.model.encoder
    padded = lambda part: padded_vectors(encoder, part)  # noqa: E731
    packed = lambda part: packed_vectors(encoder, part, args.row_tokens)  # noqa: E731
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "run": str(args.run),
        "precision": clf.precision.name,
        "texts": len(ids),
        "row_tokens": args.row_tokens,
    }
    with torch.inference_mode(), clf.precision.autocast():
        check = ids[:32]
        result["max_abs_vector_difference"] = float((padded(check) - packed(check)).abs().max())
        for group in (8, 16, 32):
            result[f"random {group}"] = {
                "padded": texts_per_second(padded, ids, group),
                "packed": texts_per_second(packed, ids, group),
            }
        result["all in one call, padded"] = texts_per_second(padded, ids, len(ids))
    print(json.dumps(result, indent=1))
    (REPO / "bench" / "results" / "packed_batches.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
