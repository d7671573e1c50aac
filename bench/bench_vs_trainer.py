"""Full fine-tuning, end to end: ``python train.py`` against the Hugging Face Trainer at its best CPU
settings, and ``training.compile=true`` (cold and warm inductor cache) against eager.

    python bench/bench_vs_trainer.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en
    # ~12 min on 2 cores with --repeats 2

Same data for every arm: a seeded subset of the dataset's train part (``--train-texts``, 2,000),
its validation and test parts (760 each), written once to a raw folder that ``train.py`` reads with
``data.split=files``. One epoch, batch 32, texts cut at 128 tokens, encoder learning rate 5e-5.

- ``ours``: ``train.py`` (mean pooling + MLP head, precision auto, length-grouped batches).
- ``trainer``: ``AutoModelForSequenceClassification`` + ``Trainer`` with ``bf16=True`` (CPU
  autocast), ``train_sampling_strategy="group_by_length"``, dynamic padding (``DataCollatorWithPadding``), fused AdamW,
  no checkpoints, no reporting; it tokenizes, trains, then scores the validation and test parts.
- ``ours, SDPA only``: ``training.attention=sdpa`` (every step through SDPA, as before the
  per-batch kernel choice).
- ``ours, passes unpacked`` (``--arms ...,unpacked``): ``train.py`` with the validation and test
  passes' bf16 linear weights left unpacked (``prepacking_available`` switched off; before 2026-12-05).
- ``ours, PyTorch's dropout`` (``--arms ...,torch-dropout``): ``train.py`` with PyTorch's own CPU
  dropout instead of masks drawn four to a random word (``runtime/dropout.py``; before 2026-12-05).
- ``ours, embeddings frozen`` (``--arms ...,frozen-embeddings``): ``training.freeze_embeddings=true``.
- ``ours, compile cold`` / ``warm`` (``--arms ...,compile``): ``training.compile=true`` with an emptied inductor cache,
  then again with the cache the cold run left.

Every arm is a fresh process timed from start to exit (wall), round robin over ``--repeats``
rounds; the training loop's own seconds are read from each tool's log. Results:
bench/results/vs_trainer.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

ENCODER_LR, HEAD_LR, BATCH, MAX_LENGTH = 5e-5, 1e-3, 32, 128


def patched_train(patch: str) -> str:
    """``python -c`` code: train.py with one thing of the package switched back, for before/after arms."""
    return (
        f"import runpy, sys; {patch}; "
        f"sys.argv = ['train.py', *sys.argv[1:]]; runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')"
    )


# inference passes as they ran before packing; dropout as PyTorch draws it (before 2026-12-05)
UNPACKED = patched_train("import finetune_pipeline.model.prepacked as p; p.prepacking_available = lambda: False")
TORCH_DROPOUT = patched_train(
    "import torch, finetune_pipeline.runtime.dropout as d; d.word_dropout = torch.nn.functional.dropout"
)


def write_data(dataset: Path, folder: Path, train_texts: int) -> None:
    """The shared raw folder: a seeded subset of train, the whole validation and test parts."""
    folder.mkdir(parents=True)
    train = json.loads((dataset / "part-1-train.json").read_text(encoding="utf-8"))
    random.Random(0).shuffle(train)
    (folder / "part-1-train.json").write_text(json.dumps(train[:train_texts], ensure_ascii=False), encoding="utf-8")
    for name in ("part-2-validation.json", "part-3-test.json"):
        shutil.copy(dataset / name, folder / name)


def minilm_on(model: Path, raw: Path) -> list[str]:
    """train.py overrides every arm shares: the MiniLM folder on the raw folder's own parts."""
    return [
        "backbone=local",
        "backbone.name=all-MiniLM-L6-v2",
        f"backbone.path={model.resolve()}",
        f"data.raw_dir={raw}",
        "data.split=files",
        f"data.max_length={MAX_LENGTH}",
    ]


def trainer_main(model: Path, raw: Path, out: Path) -> None:
    """One Trainer run (in its own process); prints a JSON line with its figures."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    torch.manual_seed(0)
    parts = {
        split: json.loads((raw / f"part-{i}-{split}.json").read_text(encoding="utf-8"))
        for i, split in ((1, "train"), (2, "validation"), (3, "test"))
    }
    labels = sorted({r["output"] for r in parts["train"]})
    index = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model)

    def encoded(records):
        enc = tokenizer([r["input"] for r in records], truncation=True, max_length=MAX_LENGTH)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": index[r["output"]]}
            for ids, mask, r in zip(enc["input_ids"], enc["attention_mask"], records, strict=True)
        ]

    data = {split: encoded(records) for split, records in parts.items()}
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=128,
        learning_rate=ENCODER_LR,
        warmup_steps=0.1,  # a float below 1: that share of the steps (transformers 5)
        weight_decay=0.01,
        bf16=True,
        train_sampling_strategy="group_by_length",
        optim="adamw_torch_fused",
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        logging_steps=20,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    scores = {}
    for split in ("validation", "test"):
        prediction = trainer.predict(data[split])
        scores[split] = float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))
    print(
        json.dumps(
            {"train_seconds": train_seconds, "val_accuracy": scores["validation"], "test_accuracy": scores["test"]}
        )
    )


def ours(out: str, raw: Path, model: Path, run: Path, extra: list[str]) -> dict:
    """Figures of a finished ``train.py`` run: its loop's seconds (the epoch line) and test accuracy."""
    epoch = re.search(r"epoch 1/1: .*\(([\d.]+) s\)", out)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "train_seconds": float(epoch.group(1)) if epoch else None,
        "test_accuracy": metrics["test"]["test/accuracy"],
        "compiled": "torch.compile (inductor" in out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--train-texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--arms",
        default="ours,sdpa,trainer",
        help="comma-separated: ours, sdpa, unpacked, torch-dropout, frozen-embeddings, trainer, compile",
    )
    parser.add_argument(
        "--seed-per-round", action="store_true", help="round r trains with training.seed=r+1 (our arms): seed spread"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-vs-trainer"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vs_trainer.json")
    parser.add_argument("--trainer-run", nargs=2, type=Path, help=argparse.SUPPRESS)  # internal: raw folder, out
    args = parser.parse_args()
    if args.trainer_run:
        trainer_main(args.model, *args.trainer_run)
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    raw = args.workdir / "raw"
    write_data(args.dataset, raw, args.train_texts)
    env = {
        **os.environ,
        "FINETUNE_PIPELINE_ROOT": str(args.workdir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    inductor = args.workdir / "inductor"
    common = [
        *minilm_on(args.model, raw),
        "training.freeze_backbone=false",
        "training.epochs=1",
        f"training.batch_size={BATCH}",
        f"training.learning_rate={HEAD_LR:g}",
        f"training.encoder_learning_rate={ENCODER_LR:g}",
        "model.hidden_dim=512",
        "training.progress_bar=false",
        "logger=none",
    ]
    arms = args.arms.split(",")
    rows: dict[str, list[dict]] = {}
    for round_ in range(args.repeats):
        for arm in arms:
            run = args.workdir / "outputs" / f"{arm}-{round_}"
            if arm == "trainer":
                cmd = [sys.executable, __file__, "--model", str(args.model), "--dataset", str(args.dataset)]
                wall, peak, out = run_measured([*cmd, "--trainer-run", str(raw), str(run)], env)
                rows.setdefault(arm, []).append(
                    {"wall": wall, "peak_mb": peak, **json.loads(out.strip().splitlines()[-1])}
                )
                continue
            names = {
                "ours": ["ours"],
                "sdpa": ["ours, SDPA only"],
                "unpacked": ["ours, passes unpacked"],
                "torch-dropout": ["ours, PyTorch's dropout"],
                "frozen-embeddings": ["ours, embeddings frozen"],
                "compile": ["ours, compile cold", "ours, compile warm"],
            }[arm]
            for name in names:
                if name.endswith("cold"):
                    shutil.rmtree(inductor, ignore_errors=True)
                extra = ["training.compile=true"] if "compile" in name else []
                extra += ["training.attention=sdpa"] if "SDPA" in name else []
                extra += ["training.freeze_embeddings=true"] if "embeddings frozen" in name else []
                extra += [f"training.seed={round_ + 1}"] if args.seed_per_round else []
                target = run.with_name(f"{run.name}-{name.split()[-1]}")
                runner = [str(REPO / "train.py")]
                runner = ["-c", UNPACKED] if "unpacked" in name else runner
                runner = ["-c", TORCH_DROPOUT] if "PyTorch's dropout" in name else runner
                cmd = [sys.executable, *runner, *common, *extra, f"hydra.run.dir={target}"]
                wall, peak, out = run_measured(cmd, {**env, "TORCHINDUCTOR_CACHE_DIR": str(inductor)})
                rows.setdefault(name, []).append(
                    {"wall": wall, "peak_mb": peak, **ours(out, raw, args.model, target, extra)}
                )
            print(f"round {round_ + 1}: {arm} done", file=sys.stderr)
    results = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "train_texts": args.train_texts,
        "repeats": args.repeats,
        "runs": rows,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    base = statistics.median(r["wall"] for r in rows["trainer"]) if "trainer" in rows else None
    if "trainer" in rows:  # each round's own ratio: the spread of the comparison
        for name, runs in rows.items():
            results.setdefault("trainer_wall_over", {})[name] = [
                t["wall"] / r["wall"] for t, r in zip(rows["trainer"], runs, strict=True)
            ]
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| arm | wall s (median, range) | training loop s | test accuracy | Trainer wall / this wall |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        walls = sorted(r["wall"] for r in runs)
        loops = [r["train_seconds"] for r in runs if r.get("train_seconds")]
        accs = [r["test_accuracy"] for r in runs]
        per_round = sorted(results.get("trainer_wall_over", {}).get(name, []))
        ratio = f"{base / statistics.median(walls):.2f}x" if base else "-"
        ratio += f" ({per_round[0]:.2f}-{per_round[-1]:.2f} by round)" if per_round else ""
        print(
            f"| {name} | {statistics.median(walls):.1f} ({walls[0]:.1f}-{walls[-1]:.1f}) | "
            f"{statistics.median(loops):.1f} | {min(accs):.4f}-{max(accs):.4f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
