"""Selection regret: does choosing by mean validation over repeats pick better configurations than
choosing the best single job, and do the reported 95% intervals of the differences hold?

    python bench/bench_selection_regret.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en \
        [--resamplings 10] [--seeds 5] [--workdir /tmp/selection-regret]

1. all-MiniLM-L6-v2, frozen, mean pooling: every text of the AG News set encoded once (cached).
2. For each of ``--resamplings`` draws: a small budget of 1,400 texts from the train file, stratified;
   the rest of the set (about 6,200 texts) is the held-out set. The budget is split 1,000 train / 200
   validation / 200 test in one of two ways, both measured:
   - ``split-per-seed`` (``data.seed=1,2,3,4,5``, the documented way to repeat): each seed splits the
     budget anew and sets the initialisation; the summary compares with a paired t-test over seeds;
   - ``fixed-split`` (``training.seed=1,...,5``): one split, seeds vary the initialisation only; the
     repeats share their test texts and the summary uses its two-level bootstrap.
3. 8 head configurations (hidden_dim 64 | 512 x learning_rate 3e-4 | 3e-3 x dropout 0 | 0.3), each
   trained with ``--seeds`` seeds (head initialisation and data order), as a run of this project
   trains a frozen head: AdamW groups and the linear warm-up schedule of ``training/``, batches of 16,
   5 epochs, the weights of the epoch with the best validation macro-F1 kept and tested.
4. The picks: (a) the configuration of the single job with the best validation macro-F1; (b) the
   configuration with the best mean validation macro-F1 (``sweep/configurations.summarize``, what
   the sweep summary and ``finetune-compare`` report).
5. Regret of a pick: the best configuration's held-out accuracy minus the pick's (a configuration's
   held-out accuracy: the mean over its seeds' models). Coverage: for every comparison the summary
   reports (each configuration against the picked best, test accuracy, paired over seeds), whether
   its 95% interval holds the same difference measured on the held-out texts.

Results: bench/results/selection_regret.json and a summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

from finetune_pipeline.backbone.load import read_encoder, read_tokenizer
from finetune_pipeline.config.schema import (
    LrSchedule,
    MixedPrecision,
    Pooling,
)
from finetune_pipeline.data.batches import TokenizedTexts
from finetune_pipeline.features.encode import encode
from finetune_pipeline.model.classifier import HeadConfig
from finetune_pipeline.runtime.precision import Precision, resolve_precision
from finetune_pipeline.sweep.configurations import Configuration, Predictions, Repeat, summarize
from finetune_pipeline.training.optim import build_optimizer
from finetune_pipeline.training.schedule import build_scheduler

CONFIGS = [
    {"model.hidden_dim": h, "training.learning_rate": lr, "model.dropout": d}
    for h in (64, 512)
    for lr in (3e-4, 3e-3)
    for d in (0.0, 0.3)
]
EPOCHS, BATCH = 5, 16


def features_of(model: Path, texts: list[str], cache: Path) -> torch.Tensor:
    if cache.is_file():
        return torch.load(cache)
    encoder, tokenizer = read_encoder(model), read_tokenizer(model)
    precision: Precision = resolve_precision(MixedPrecision.fp32, torch.device("cpu"))
    features, _ = encode(
        encoder,
        TokenizedTexts(texts, [0] * len(texts), tokenizer, 128),
        Pooling.mean,
        precision,
        torch.device("cpu"),
        128,
        8192,
        tokenizer.pad_token_id,
    )
    torch.save(features, cache)
    return features


def train_head(
    x: torch.Tensor, y: torch.Tensor, rows: dict[str, np.ndarray], config: dict, seed: int, classes: int
) -> torch.nn.Module:
    """A frozen run's head: seeded initialisation and order, best epoch by validation macro-F1."""
    torch.manual_seed(seed)
    head = HeadConfig(x.shape[1], config["model.hidden_dim"], classes, "mean", config["model.dropout"]).build()
    model = torch.nn.Module()
    model.head = head
    optimizer = build_optimizer(model, config["training.learning_rate"], 2e-5, 0.01)
    steps = EPOCHS * -(-len(rows["train"]) // BATCH)
    scheduler = build_scheduler(optimizer, steps, 0.1, LrSchedule.linear)
    order = np.random.default_rng(seed)
    best, best_state = -1.0, None
    for _ in range(EPOCHS):
        head.train()
        for batch in np.array_split(order.permutation(rows["train"]), steps // EPOCHS):
            loss = torch.nn.functional.cross_entropy(head(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        head.eval()
        with torch.no_grad():
            val = f1_score(y[rows["val"]].numpy(), head(x[rows["val"]]).argmax(1).numpy(), average="macro")
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.best_val = best
    return head.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--resamplings", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/selection-regret"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    records, part_of = [], []
    for part in sorted(args.dataset.glob("*.json")):
        rows = json.loads(part.read_text(encoding="utf-8"))
        records += rows
        part_of += [part.name] * len(rows)
    labels = sorted({r["output"] for r in records})
    y_all = torch.tensor([labels.index(r["output"]) for r in records])
    x_all = features_of(args.model, [r["input"] for r in records], args.workdir / "features.pt")
    train_file = np.asarray([i for i, p in enumerate(part_of) if "train" in p])
    out = {"date": str(date.today()), "machine": machine(), "configs": CONFIGS, "seeds": args.seeds}
    for mode in ("split-per-seed", "fixed-split"):
        out[mode] = resamplings(mode, args, x_all, y_all, labels, train_file, len(records))
        print(mode, json.dumps({k: v for k, v in out[mode].items() if k != "resamplings"}, indent=1), flush=True)
    (REPO / "bench" / "results" / "selection_regret.json").write_text(json.dumps(out, indent=2), encoding="utf-8")


def split_budget(drawn: np.ndarray, y_all: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    train, rest = train_test_split(drawn, train_size=1000, stratify=y_all[drawn].numpy(), random_state=seed)
    val, test = train_test_split(rest, train_size=200, stratify=y_all[rest].numpy(), random_state=seed)
    return {"train": train, "val": val, "test": test}


def resamplings(
    mode: str, args, x_all: torch.Tensor, y_all: torch.Tensor, labels: list[str], train_file: np.ndarray, total: int
) -> dict:
    results = []
    for r in range(args.resamplings):
        drawn, _ = train_test_split(train_file, train_size=1400, stratify=y_all[train_file].numpy(), random_state=r)
        held = np.setdiff1d(np.arange(total), drawn)
        configurations, heldout, jobs = [], {}, []
        for c, config in enumerate(CONFIGS):
            configuration = Configuration({k: str(v) for k, v in config.items()})
            scores = []
            for seed in range(1, args.seeds + 1):
                rows = split_budget(drawn, y_all, 1000 * r + seed if mode == "split-per-seed" else 1000 * r)
                head = train_head(x_all, y_all, rows, config, seed, len(labels))
                test = rows["test"]
                with torch.no_grad():
                    test_pred = head(x_all[test]).argmax(1).numpy()
                    held_acc = float((head(x_all[held]).argmax(1) == y_all[held]).float().mean())
                test_true = y_all[test].numpy()
                predictions = Predictions(
                    [str(i) for i in test],
                    test_true,
                    test_pred,
                    np.ones(len(test)),
                    labels,
                    [str(i) for i in range(len(labels))],
                )
                configuration.repeats.append(
                    Repeat(
                        f"{c}/{seed}",
                        (str(seed), None, None),
                        head.best_val,
                        {
                            "test/accuracy": float((test_pred == test_true).mean()),
                            "test/macro_f1": float(f1_score(test_true, test_pred, average="macro")),
                        },
                        predictions,
                    )
                )
                jobs.append((head.best_val, configuration.label))
                scores.append((seed, held_acc))
            configurations.append(configuration)
            heldout[configuration.label] = dict(scores)
        summary = summarize(configurations, "val/macro_f1")
        truth = {label: statistics.mean(by_seed.values()) for label, by_seed in heldout.items()}
        best_truth = max(truth.values())
        pick_single = max(jobs)[1]
        pick_mean = summary["best_config"]["config"]
        covered, compared, verdicts, tests = 0, 0, [], set()
        for comparison in summary["comparisons"]:
            if comparison["metric"] != "test/accuracy" or comparison["ci95"] is None:
                continue
            true_difference = truth[comparison["config"]] - truth[comparison["against"]]
            covered += comparison["ci95"][0] <= true_difference <= comparison["ci95"][1]
            compared += 1
            verdicts.append(comparison["verdict"])
            tests.add(comparison["test"])
        results.append(
            {
                "resampling": r,
                "pick_single_job": pick_single,
                "pick_mean_validation": pick_mean,
                "regret_single_job": best_truth - truth[pick_single],
                "regret_mean_validation": best_truth - truth[pick_mean],
                "heldout_accuracy": truth,
                "covered": covered,
                "compared": compared,
                "verdicts": verdicts,
                "warnings": summary["warnings"],
                "tests": sorted(tests),
            }
        )
        print(
            f"{mode} resampling {r}: regret single job {results[-1]['regret_single_job']:.4f}, mean validation "
            f"{results[-1]['regret_mean_validation']:.4f}; intervals covering {covered}/{compared}",
            flush=True,
        )
    single = [x["regret_single_job"] for x in results]
    mean = [x["regret_mean_validation"] for x in results]
    return {
        "resamplings": results,
        "test": summary_test(results),
        "mean_regret_single_job": statistics.mean(single),
        "mean_regret_mean_validation": statistics.mean(mean),
        "regret_single_minus_mean_paired": _paired(single, mean),
        "coverage": sum(x["covered"] for x in results) / max(sum(x["compared"] for x in results), 1),
        "comparisons": sum(x["compared"] for x in results),
        "verdict_counts": {
            v: sum(x["verdicts"].count(v) for x in results) for v in sorted({v for x in results for v in x["verdicts"]})
        },
    }


def summary_test(results: list[dict]) -> str:
    return sorted({t for x in results for t in x.get("tests", [])})[0] if any(x.get("tests") for x in results) else ""


def _paired(a: list[float], b: list[float]) -> dict:
    from finetune_pipeline.evaluation.statistics import paired_t

    d = paired_t(a, b)
    return {"mean": d.mean_difference, "ci95": list(d.ci95) if d.ci95 else None, "p_value": d.p_value, "test": d.test}


if __name__ == "__main__":
    main()
