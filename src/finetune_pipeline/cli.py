"""``finetune-pipeline predict|evaluate RUN_DIR ...`` (also ``python -m finetune_pipeline``).

    finetune-pipeline predict outputs/2026-11-26/12-00-00-000000 --input texts.txt --output predictions.jsonl
    finetune-pipeline evaluate outputs/2026-11-26/12-00-00-000000 --input data/holdout.jsonl

predict writes one JSON object per text (text, label, symbol, score, top_k) to --output (JSON Lines,
or a JSON array for a .json name) or to stdout; evaluate writes report.json, confusion_matrix.json,
confusion_matrix.png and predictions.jsonl into RUN_DIR/evaluation/<name>/. Bad input: one line
on stderr, exit status 1, nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from finetune_pipeline.errors import PipelineError

log = logging.getLogger("finetune_pipeline.cli")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars around the output
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    try:
        args.command(args)
    except PipelineError as e:
        log.error("%s", e)
        return 1
    return 0


def predict(args: argparse.Namespace) -> None:
    from finetune_pipeline.evaluation.report import prediction_rows
    from finetune_pipeline.inference.inputs import read_texts, write_rows

    texts = read_texts(args.input)  # before loading the model: a bad file fails in a second
    clf = _load(args)
    rows = prediction_rows(texts, clf.probabilities(texts), clf.symbols, clf.labels, top_k=args.top_k)
    if args.output:
        write_rows(args.output, rows)
        log.info("%d predictions -> %s", len(rows), args.output)
    else:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def evaluate(args: argparse.Namespace) -> None:
    from finetune_pipeline.evaluation.report import write_evaluation
    from finetune_pipeline.inference.inputs import read_labelled

    texts, labels, where = read_labelled(args.input)
    clf = _load(args)
    known = {label: i for i, label in enumerate(clf.labels)}
    for label, at in zip(labels, where):
        if label not in known:
            shown = ", ".join(repr(k) for k in clf.labels[:10]) + (" ..." if len(known) > 10 else "")
            raise PipelineError(f"{args.input}: {at}: label {label!r} is not one of the run's classes ({shown})")
    y_true = np.asarray([known[label] for label in labels])
    folder = args.run_dir / "evaluation" / (args.name or args.input.stem)
    report = write_evaluation(folder, texts, y_true, clf.probabilities(texts), clf.symbols, clf.labels)
    log.info("%d texts: accuracy %.4f, macro-F1 %.4f, weighted F1 %.4f -> %s", report["texts"], report["accuracy"],
             report["macro_f1"], report["weighted_f1"], folder)


def _load(args: argparse.Namespace):
    from finetune_pipeline.inference.classifier import Classifier

    return Classifier.from_run(args.run_dir, args.checkpoint, args.backbone, args.device, args.precision,
                               args.batch_size)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="{predict,evaluate}")
    for name, func, help_text, input_help in (
        ("predict", predict, "classify texts with a trained run",
         "texts: .json (array of strings or {\"input\"} objects), .jsonl, or plain text (one per line)"),
        ("evaluate", evaluate, "score a trained run on a labelled file; the report goes into the run folder",
         "labelled .json or .jsonl records {\"input\": text, \"output\": label}"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command=func)
        sub.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (outputs/<date>/<time>)")
        sub.add_argument("--input", type=Path, required=True, metavar="FILE", help=input_help)
        if name == "predict":
            sub.add_argument("--output", type=Path, metavar="FILE", help="JSON Lines (or .json array); default stdout")
            sub.add_argument("--top-k", type=int, default=5, help="classes listed per text (default 5)")
        else:
            sub.add_argument("--name", help="report folder name under RUN_DIR/evaluation/ (default: the file's stem)")
        sub.add_argument("--checkpoint", default="best_model.pt", help="best_model.pt (default) or final_model.pt")
        sub.add_argument("--backbone", type=Path, help="encoder folder, if it moved since training")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        sub.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
        sub.add_argument("--batch-size", type=int, default=64)
    return parser


if __name__ == "__main__":
    sys.exit(main())
