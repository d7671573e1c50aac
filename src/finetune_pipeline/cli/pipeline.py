"""``finetune-pipeline predict|evaluate|export|push|serve|convert-config ...`` (also ``python -m finetune_pipeline``).

    finetune-pipeline predict outputs/2026-11-26/12-00-00-000000 --input texts.txt --output predictions.jsonl
    finetune-pipeline evaluate outputs/2026-11-26/12-00-00-000000 --input data/holdout.jsonl
    finetune-pipeline export outputs/2026-11-26/12-00-00-000000 --format onnx --quantize int8
    finetune-pipeline serve outputs/2026-11-26/12-00-00-000000 --engine onnxruntime --port 8000
    finetune-pipeline convert-config old/configs/train_config.json --name news
        # then: python train.py +experiment=news

Inputs are .json, .jsonl, .csv, .tsv or .parquet files with the text (and for evaluate the label)
in the run's data.text_field / data.label_field or --text-field / --label-field; predict also takes
plain text, one text per line. predict writes one row per text (text, label, symbol, score, top_k)
to --output (JSON Lines; a JSON array for a .json name, CSV for .csv) or to stdout; evaluate writes
report.json, confusion_matrix.json, confusion_matrix.png and predictions.jsonl into
RUN_DIR/evaluation/<name>/. Bad input: one line on stderr, exit status 1 (2 for a bad command
line), nothing written. SIGINT/SIGTERM: one line, exit 130/143, nothing half-written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE, EVALUATION_DIR, FINAL_MODEL_FILE
from finetune_pipeline.cli import inspect_data
from finetune_pipeline.cli.arguments import OneLineParser, milliseconds, port_number, positive_int, probability, seconds
from finetune_pipeline.cli.errors import exit_status
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.logs import log_to_stderr

log = logging.getLogger("finetune_pipeline.cli.pipeline")

TRAINING_REPORT = "test"  # evaluation/test/ is written by train.py for the test split; never by evaluate


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log_to_stderr()

    def command() -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no weight-loading bars around the output
        args.command(args)

    return exit_status(
        command, "nothing was written (outputs are replaced whole or not at all)", signals=args.command is not serve
    )


def predict(args: argparse.Namespace) -> None:
    from finetune_pipeline.artifacts.atomic import to_json
    from finetune_pipeline.inference.inputs import checked_texts, read_texts, write_rows

    if args.output is not None:
        check_output_path(args.output, args.input, args.run_dir)
    if args.text is not None:
        texts = checked_texts(args.text)
    else:  # before loading the model: a bad file fails in a second
        texts = read_texts(args.input, input_fields(args)[0], stdin=sys.stdin.buffer)
    clf = _load(args)
    rows = clf.rows(texts, clf.probabilities(texts), top_k=args.top_k, min_score=args.min_score)
    if args.output:
        write_rows(args.output, rows)
        log.info("%d predictions -> %s", len(rows), args.output)
    else:
        for row in rows:
            sys.stdout.write(to_json(row) + "\n")


def evaluate(args: argparse.Namespace) -> None:
    from finetune_pipeline.evaluation.report import write_evaluation
    from finetune_pipeline.inference.inputs import read_labelled, run_label_separator

    name = report_name(args.name if args.name is not None else args.input.stem, given=args.name is not None)
    folder = args.run_dir / EVALUATION_DIR / name
    if folder.exists() and not args.overwrite:
        raise PipelineError(f"{folder}: a report of that name exists; pass --overwrite to replace it, or --name NAME")
    texts, labels, where = read_labelled(args.input, input_fields(args), run_label_separator(args.run_dir))
    clf = _load(args)
    known = {label: i for i, label in enumerate(clf.labels)}
    for label, at in zip(labels, where):
        for one in label if isinstance(label, tuple) else (label,):
            if one not in known:
                shown = ", ".join(repr(k) for k in clf.labels[:10]) + (" ..." if len(known) > 10 else "")
                raise PipelineError(f"{args.input}: {at}: label {one!r} is not one of the run's classes ({shown})")
        if isinstance(label, tuple) and not clf.multi_label and len(label) != 1:
            raise PipelineError(f"{args.input}: {at}: {len(label)} labels, but the run classifies one label per text")
    if clf.multi_label:
        y_true = np.zeros((len(labels), len(known)), dtype=np.int64)
        for i, label in enumerate(labels):
            y_true[i, [known[one] for one in (label if isinstance(label, tuple) else (label,))]] = 1
    else:
        y_true = np.asarray([known[label[0] if isinstance(label, tuple) else label] for label in labels])
    report = write_evaluation(folder, texts, y_true, clf.probabilities(texts), clf.symbols, clf.labels)
    log.info(
        "%d texts: %saccuracy %.4f, macro-F1 %.4f, weighted F1 %.4f%s -> %s",
        report["texts"],
        "subset " if clf.multi_label else "",
        report["accuracy"],
        report["macro_f1"],
        report["weighted_f1"],
        f", micro-F1 {report['micro_f1']:.4f}" if clf.multi_label else "",
        folder,
    )


def input_fields(args: argparse.Namespace) -> tuple[str, str]:
    """The text and label field of input files: --text-field / --label-field, else the run's own."""
    from finetune_pipeline.inference.inputs import run_fields

    text_field, label_field = run_fields(args.run_dir)
    return args.text_field or text_field, args.label_field or label_field


def report_name(name: str, given: bool) -> str:
    """A report folder name: one plain path component, not the training run's own report."""
    source = "--name" if given else "the input file's name (pass --name)"
    if not name or name.strip() != name or name in (".", "..") or name.startswith(".") or "\0" in name:
        raise PipelineError(f"report name {name!r} from {source} is not usable: it must be a plain, visible name")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise PipelineError(
            f"report name {name!r} from {source} contains a path separator; it names a folder under RUN_DIR/evaluation/"
        )
    if name.casefold() == TRAINING_REPORT:
        raise PipelineError(
            f"report name {name!r} from {source} is reserved for the training run's test report "
            "(evaluation/test/); choose another --name"
        )
    return name


def check_output_path(output: Path, input_path: Path | None, run_dir: Path) -> None:
    """--output must not be the input (any spelling, links included), a folder, or a run artifact."""
    if output.is_dir():
        raise PipelineError(f"--output {output}: is a folder; name a file")
    if input_path is not None and str(input_path) != "-" and _same_file(output, input_path):
        raise PipelineError(f"--output {output} is the input file {input_path}; writing would destroy the input")
    run = run_dir.resolve()
    target = output.resolve()
    if target.exists() and (target == run or run in target.parents):
        raise PipelineError(
            f"--output {output}: would overwrite {target.relative_to(run)} in the run folder; "
            "write predictions elsewhere"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _load(args: argparse.Namespace):
    from finetune_pipeline.export.engines import Classifier

    return Classifier.from_run(
        args.run_dir, args.checkpoint, args.backbone, args.device, args.precision, args.batch_size, engine=args.engine
    )


def export(args: argparse.Namespace) -> None:
    from finetune_pipeline.export.onnx import export_onnx

    if not (args.run_dir / args.checkpoint).is_file():
        raise PipelineError(f"{args.run_dir}: not a finished run folder ({args.checkpoint} is missing)")
    if args.format == "hf":
        from finetune_pipeline.export.hf import export_hf

        if args.quantize:
            raise PipelineError("--quantize applies to --format onnx only")
        export_hf(args.run_dir, args.out, args.checkpoint, args.overwrite, args.backbone)
        return
    report = export_onnx(args.run_dir, args.out, args.checkpoint, args.quantize, args.overwrite, args.backbone)
    accuracy = report["test_accuracy"]
    line = (
        f"max |p_onnx - p_torch| {report['max_abs_probability_difference']:.2e} on {report['test_texts']} test "
        f"texts; test accuracy pytorch {accuracy['pytorch']:.4f}, onnx fp32 {accuracy['onnx_fp32']:.4f}"
    )
    if "onnx_int8" in accuracy:
        line += f", onnx int8 {accuracy['onnx_int8']:.4f} ({100 * report['int8_accuracy_change']:+.2f} points)"
    log.info("%s", line)


def convert_config(args: argparse.Namespace) -> None:
    from finetune_pipeline.cli.convert_config import check_name, convert, write_experiment
    from finetune_pipeline.paths import conf_dir, project_root

    name = check_name(args.name if args.name is not None else args.config.stem)
    conversion = convert(args.config, name, args.original_root)
    project = project_root()
    conf = args.conf_dir or conf_dir()
    target = write_experiment(conversion, name, args.config, conf, project, args.overwrite)
    for note in conversion.notes:
        log.info("note: %s", note)
    for item in conversion.unmapped:
        log.warning("no equivalent: %s", item)
    log.info("%d settings -> %s; run it with: python train.py +experiment=%s", len(conversion.overrides), target, name)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="finetune-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(
        required=True,
        metavar="{predict,evaluate,export,push,serve,inspect-data,convert-config}",
        parser_class=OneLineParser,
    )
    for name, func, help_text, input_help in (
        (
            "predict",
            predict,
            "classify texts with a trained run",
            "texts: .json/.jsonl (strings or records), .csv/.tsv/.parquet (a text column), "
            "or plain text (one per line)",
        ),
        (
            "evaluate",
            evaluate,
            "score a trained run on a labelled file; the report goes into the run folder",
            "labelled .json/.jsonl records or .csv/.tsv/.parquet rows with a text and a label field",
        ),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command=func)
        sub.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (outputs/<date>/<time>)")
        if name == "predict":
            source = sub.add_mutually_exclusive_group(required=True)
            source.add_argument("--input", type=Path, metavar="FILE", help=f"{input_help}; - reads standard input")
            source.add_argument(
                "--text", action="append", metavar="TEXT", help="a text to classify (repeat for more texts)"
            )
        else:
            sub.add_argument("--input", type=Path, required=True, metavar="FILE", help=input_help)
        sub.add_argument(
            "--text-field", metavar="NAME", help="the texts' key or column (default: the run's data.text_field)"
        )
        sub.add_argument(
            "--label-field",
            metavar="NAME",
            help="the labels' key or column (evaluate; default: the run's data.label_field)",
        )
        if name == "predict":
            sub.add_argument(
                "--output", type=Path, metavar="FILE", help="JSON Lines, or a .json array, or .csv; default stdout"
            )
            sub.add_argument("--top-k", type=positive_int, default=5, help="classes listed per text (default 5)")
            sub.add_argument(
                "--min-score",
                type=probability,
                metavar="P",
                help="abstain below this score: label and symbol are null (the run's report lists "
                "the accuracy each threshold keeps: evaluation/test/report.json risk_coverage)",
            )
        else:
            sub.add_argument(
                "--name",
                help="report folder name under RUN_DIR/evaluation/ (default: the file's stem; "
                "'test' is the training run's own report)",
            )
            sub.add_argument("--overwrite", action="store_true", help="replace an existing report of that name")
        sub.add_argument(
            "--checkpoint",
            default=BEST_MODEL_FILE,
            choices=[BEST_MODEL_FILE, FINAL_MODEL_FILE],
            help="best_model.pt (default) or final_model.pt",
        )
        sub.add_argument("--backbone", type=Path, help="encoder folder, if it moved since training")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        sub.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
        sub.add_argument("--batch-size", type=positive_int, default=64, help="texts per batch (default 64)")
        sub.add_argument(
            "--engine",
            default="torch",
            choices=["torch", "onnxruntime", "onnxruntime-int8"],
            help="torch (default), or onnxruntime / onnxruntime-int8: the run's ONNX export (fp32 or its "
            "int8 graph) on the CPU, made when missing",
        )
    sub = commands.add_parser(
        "export",
        help="export a trained run for deployment",
        description="export a trained run for deployment: one ONNX graph (token ids and "
        "attention mask -> class probabilities), verified on the run's test texts",
    )
    sub.set_defaults(command=export)
    sub.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (outputs/<date>/<time>)")
    sub.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "hf"],
        help="onnx (default; RUN_DIR/export/onnx/) or hf: a Hugging Face model folder (RUN_DIR/export/hf/)",
    )
    sub.add_argument("--quantize", choices=["int8"], help="also write model_quantized.onnx (dynamic int8 quantization)")
    sub.add_argument("--out", type=Path, metavar="DIR", help="default: RUN_DIR/export/<format>/")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    sub.add_argument(
        "--checkpoint",
        default=BEST_MODEL_FILE,
        choices=[BEST_MODEL_FILE, FINAL_MODEL_FILE],
        help="best_model.pt (default) or final_model.pt",
    )
    sub.add_argument("--backbone", type=Path, help="encoder folder, if it moved since training")
    sub = commands.add_parser(
        "push",
        help="upload an exported Hugging Face folder to the Hub",
        description="upload a folder written by `export --format hf` to the Hugging Face Hub",
    )
    sub.set_defaults(command=push)
    sub.add_argument("folder", type=Path, metavar="FOLDER", help="e.g. RUN_DIR/export/hf")
    sub.add_argument("--repo-id", required=True, help="user-or-org/name on the Hub")
    sub.add_argument("--private", action="store_true", help="create the repository as private")
    sub.add_argument("--token", help="a Hub token (default: HF_TOKEN or `hf auth login`)")
    sub = commands.add_parser(
        "serve",
        help="serve a run or an export over HTTP",
        description="serve a run folder, an ONNX export or a Hugging Face folder over HTTP: "
        "POST /predict, GET /health, GET /labels, GET /docs",
    )
    sub.set_defaults(command=serve)
    sub.add_argument("path", type=Path, metavar="RUN_OR_EXPORT")
    sub.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (0.0.0.0: every interface)")
    sub.add_argument("--port", type=port_number, default=8000, help="default 8000 (0: a free port, logged)")
    sub.add_argument(
        "--engine",
        default="torch",
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        help="torch (default; a run or Hugging Face folder) or onnxruntime / onnxruntime-int8 (a run "
        "folder, exported when missing, or an ONNX export folder, fp32 unless -int8)",
    )
    sub.add_argument(
        "--checkpoint",
        default=BEST_MODEL_FILE,
        choices=[BEST_MODEL_FILE, FINAL_MODEL_FILE],
        help="of a run folder: best_model.pt (default) or final_model.pt",
    )
    sub.add_argument("--backbone", type=Path, help="a run's encoder folder, if it moved since training")
    sub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (torch engine)")
    sub.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    sub.add_argument("--max-batch-size", type=positive_int, default=64, help="texts per shared batch (default 64)")
    sub.add_argument(
        "--max-wait-ms", type=milliseconds, default=5.0, help="how long a batch waits for more requests (default 5)"
    )
    sub.add_argument("--max-texts", type=positive_int, default=256, help="texts per request at most (default 256)")
    sub.add_argument(
        "--max-body-bytes", type=positive_int, default=1 << 20, help="request body size limit (default 1 MiB)"
    )
    sub.add_argument(
        "--max-text-chars",
        type=positive_int,
        default=20_000,
        help="characters per text at most (default 20000; a chunked run encodes every window of a text)",
    )
    sub.add_argument(
        "--max-request-chars",
        type=positive_int,
        default=200_000,
        help="characters of all texts of a request together at most (default 200000)",
    )
    sub.add_argument(
        "--body-timeout",
        type=seconds,
        default=30.0,
        help="seconds a client may pause while sending its body (default 30; then 408)",
    )
    sub.add_argument(
        "--shutdown-timeout",
        type=seconds,
        default=30.0,
        help="seconds SIGTERM waits for requests in flight before closing them (default 30)",
    )
    sub.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="inference processes, each with its own copy of the model, running batches side by side "
        "(default 1; on a CPU, one per core is often faster: see docs/deploy.md)",
    )
    sub.add_argument(
        "--threads",
        type=positive_int,
        help="intra-op threads per inference process (default: the cores shared out among the workers)",
    )
    inspect_data.add_parser(commands)
    sub = commands.add_parser(
        "convert-config",
        help="the original pipeline's train_config.json as conf/experiment/NAME.yaml",
        description="write conf/experiment/NAME.yaml from the original pipeline's "
        "train_config.json; run it with python train.py +experiment=NAME",
    )
    sub.set_defaults(command=convert_config)
    sub.add_argument("config", type=Path, metavar="TRAIN_CONFIG_JSON")
    sub.add_argument("--name", help="the experiment's name (default: the file's stem)")
    sub.add_argument(
        "--original-root",
        type=Path,
        metavar="DIR",
        help="the original repository, relative paths' base (default: the folder holding configs/)",
    )
    sub.add_argument("--conf-dir", type=Path, metavar="DIR", help="this project's conf/ (default: found)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing conf/experiment/NAME.yaml")
    return parser


def serve(args: argparse.Namespace) -> None:
    from finetune_pipeline.serving.app import Limits
    from finetune_pipeline.serving.server import serve as run_server

    limits = Limits(args.max_texts, args.max_body_bytes, args.max_text_chars, args.max_request_chars, args.body_timeout)
    run_server(
        args.path,
        args.host,
        args.port,
        args.engine,
        args.device,
        args.precision,
        args.max_batch_size,
        args.max_wait_ms,
        limits,
        args.workers,
        args.threads,
        args.checkpoint,
        args.backbone,
        args.shutdown_timeout,
    )


def push(args: argparse.Namespace) -> None:
    from finetune_pipeline.export.hf import push as push_folder

    log.info("uploaded %s -> %s", args.folder, push_folder(args.folder, args.repo_id, args.private, args.token))


if __name__ == "__main__":
    sys.exit(main())
