"""Padding-free training batches against length-grouped padding (an experiment; issue 30).

Two questions, answered on real news texts:

1. How much of a length-grouped training batch is padding? Texts of AG News, Lenta headlines and
   SIB-200 are tokenized (the MiniLM tokenizer, ``max_length`` 128), cut into an epoch of batches of
   32 by the package's ``LengthGroupedBatchSampler`` (what every training run uses) and, for
   contrast, into random batches; padded tokens / real tokens is the most any padding-free path can
   save on the linear layers.
2. What does ModernBERT's padding-free form cost here? The mmBERT-base stand-in (random init, same
   shapes as the real model) takes a training step (bf16 autocast, forward + backward; the token
   embedding matrix frozen in every arm, so its dense gradient does not blur the comparison) on
   batches with the lengths of real length-grouped batches, in each of:
   - ``padded sdpa`` / ``padded eager``: the shipped path, ``(B, longest)`` with a padding mask;
   - ``packed sdpa`` / ``packed eager``: every text of the batch in one row, positions restarting
     per text, and a block-diagonal mask per layer type (the windowed one for the local-attention
     layers), passed as the ``{"full_attention", "sliding_attention"}`` dict the Hugging Face model
     accepts. Without flash-attention (a CUDA package) this is the only unpadded form ModernBERT
     has; its attention then spans the whole row.
   - ``rows-128 sdpa``: texts packed first-fit decreasing into rows of up to 128 tokens (less wasted
     attention than one row, a little padding at the row ends).
   Before timing, the packed forward is checked against the padded one (fp32, max |difference| of
   the text vectors).

    python bench/bench_padding_free.py --backbone <backbones>/mmBERT-base --datasets <datasets> \
        --tokenizer <models>/all-MiniLM-L6-v2 [--batches 6] [--rounds 2]

Results: printed and written to bench/results/padding_free.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import date
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

from finetune_pipeline.data.batches import LengthGroupedBatchSampler

BATCH = 32
MAX_LENGTH = 128


def texts_of(folder: Path) -> list[str]:
    return [r["input"] for part in sorted(folder.glob("part-*.json")) for r in json.loads(part.read_text())]


def padding_shares(lengths: list[int], seed: int = 0) -> dict:
    grouped = LengthGroupedBatchSampler(lengths, BATCH, seed).epoch_batches(1)
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    shuffled = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    real = sum(lengths)

    def share(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) / real - 1

    return {
        "texts": len(lengths),
        "mean_tokens": real / len(lengths),
        "grouped": share(grouped),
        "random": share(shuffled),
    }


def padded_inputs(lengths: list[int], vocab: int, gen: torch.Generator) -> dict:
    longest = max(lengths)
    ids = torch.zeros(len(lengths), longest, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=gen)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pack_rows(lengths: list[int], row_tokens: int | None) -> list[list[int]]:
    """Text indices per row: all in one row (``None``) or first-fit decreasing into rows."""
    if row_tokens is None:
        return [list(range(len(lengths)))]
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([]), room.append(max(row_tokens, lengths[i]))
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def packed_inputs(padded: dict, rows: list[list[int]], window: int, kernel: str, dtype: torch.dtype) -> dict:
    """The padded batch's texts laid into rows, with per-layer-type block-diagonal masks."""
    lengths = padded["attention_mask"].sum(1).tolist()
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)  # (R, W)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    doc = torch.full((len(rows), width), -1, dtype=torch.long)  # text index per token, -1: padding
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[r, at : at + n] = padded["input_ids"][i, :n]
            positions[r, at : at + n] = torch.arange(n)
            doc[r, at : at + n] = i
            at += n
    same = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0)  # (R, W, W)
    same |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no NaN rows)
    index = torch.arange(width)
    near = (index[:, None] - index[None, :]).abs() <= window
    masks = {"full_attention": same, "sliding_attention": same & near}
    if kernel == "eager":  # eager adds the mask to the scores
        masks = {k: torch.zeros(m.shape, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min) for k, m in masks.items()}
    return {
        "input_ids": ids,
        "position_ids": positions,
        "attention_mask": {k: m[:, None] for k, m in masks.items()},  # (R, 1, W, W)
        "doc": doc,
    }


def text_vectors_padded(model, inputs: dict) -> torch.Tensor:
    hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)  # (B, H)


def text_vectors_packed(model, inputs: dict, n_texts: int) -> torch.Tensor:
    hidden = model(
        input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], attention_mask=inputs["attention_mask"]
    ).last_hidden_state  # (R, W, H)
    flat, doc = hidden.reshape(-1, hidden.shape[-1]), inputs["doc"].reshape(-1)
    keep = doc >= 0
    sums = torch.zeros(n_texts, hidden.shape[-1], dtype=hidden.dtype).index_add_(0, doc[keep], flat[keep])
    counts = torch.bincount(doc[keep], minlength=n_texts).to(hidden.dtype)
    return sums / counts[:, None]


def step_seconds(model, run) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vectors = run()
    vectors.float().pow(2).mean().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, required=True, help="folder with the stand-in's config.json")
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=6, help="length-grouped batches timed per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    shares, ag_lengths = {}, None
    for name in ("ag_news_test_en", "lenta_headlines_ru", "sib200_multi7"):
        texts = texts_of(args.datasets / name)
        lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
        shares[name] = padding_shares(lengths)
        ag_lengths = lengths if name == "ag_news_test_en" else ag_lengths
        s = shares[name]
        print(
            f"{name}: {s['texts']} texts, {s['mean_tokens']:.1f} tokens; padding/real tokens: "
            f"length-grouped {s['grouped']:.1%}, random batches {s['random']:.1%}",
            flush=True,
        )

    config = AutoConfig.from_pretrained(args.backbone)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.get_input_embeddings().weight.requires_grad_(False)
    window = model.config.sliding_window
    gen = torch.Generator().manual_seed(0)

    model.eval()  # the check: packed text vectors against padded ones (fp32, no dropout)
    check = padded_inputs([37, 90, 12, 128, 64], config.vocab_size, gen)
    with torch.no_grad():
        reference = text_vectors_padded(model, check)
        for kernel in ("sdpa", "eager"):
            model.config._attn_implementation = kernel
            for row_tokens in (None, 128):
                packed = packed_inputs(
                    check, pack_rows(check["attention_mask"].sum(1).tolist(), row_tokens), window, kernel, torch.float32
                )
                diff = (text_vectors_packed(model, packed, 5) - reference).abs().max().item()
                print(f"check {kernel} rows {row_tokens or 'one'}: max |packed - padded| = {diff:.2e}", flush=True)
                assert diff < 1e-4, diff
    model.train()

    grouped = LengthGroupedBatchSampler(ag_lengths, BATCH, seed=0).epoch_batches(1)
    picked = random.Random(1).sample(grouped, args.batches)
    batch_lengths = [[ag_lengths[i] for i in b] for b in picked]
    arms = {
        "padded sdpa": ("sdpa", "padded", None),
        "padded eager": ("eager", "padded", None),
        "packed sdpa": ("sdpa", "packed", None),
        "packed eager": ("eager", "packed", None),
        "rows-128 sdpa": ("sdpa", "packed", 128),
    }
    times = {arm: [] for arm in arms}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for lengths in batch_lengths:
            inputs = padded_inputs(lengths, config.vocab_size, gen)
            for arm, (kernel, form, row_tokens) in arms.items():
                model.config._attn_implementation = kernel
                if form == "padded":
                    seconds = step_seconds(model, partial(text_vectors_padded, model, inputs))
                else:
                    packed = packed_inputs(inputs, pack_rows(lengths, row_tokens), window, kernel, torch.bfloat16)
                    seconds = step_seconds(model, partial(text_vectors_packed, model, packed, len(lengths)))
                if round_:
                    times[arm].append(seconds)
        print(f"round {round_} done", flush=True)

    real = sum(map(sum, batch_lengths))
    padded_tokens = sum(len(b) * max(b) for b in batch_lengths)
    per_round = {
        arm: [sum(t[r * args.batches : (r + 1) * args.batches]) for r in range(args.rounds)] for arm, t in times.items()
    }
    base = per_round["padded sdpa"]
    result = {
        "date": str(date.today()),
        "machine": machine(),
        "backbone": config.name_or_path or str(args.backbone),
        "padding_shares": shares,
        "timed_batches": {"lengths": batch_lengths, "real_tokens": real, "padded_tokens": padded_tokens},
        "seconds_per_round": per_round,
        "speed_vs_padded_sdpa_per_round": {arm: [b / s for b, s in zip(base, v)] for arm, v in per_round.items()},
    }
    print(f"timed: {args.batches} length-grouped AG News batches, {real} real tokens, {padded_tokens} padded")
    for arm, v in per_round.items():
        print(
            f"{arm:>14}: {statistics.median(v):.2f} s per round ({', '.join(f'{x:.2f}' for x in v)}); "
            f"vs padded sdpa {', '.join(f'{b / s:.2f}x' for b, s in zip(base, v))}"
        )
    out = REPO / "bench" / "results" / "padding_free.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
