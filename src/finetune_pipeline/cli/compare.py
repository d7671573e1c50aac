"""``finetune-compare``: which configuration is best, by how much, and whether that is real.

    finetune-compare SWEEP [more folders] [--metric test/macro_f1] [--out DIR | --write] [--json]
    finetune-compare RUN_A RUN_B [--json]                        # two runs head to head
    finetune-compare SWEEP --a model.hidden_dim=256 --b model.hidden_dim=512 [--json]

Folders of sweeps or runs: their jobs grouped into configurations (repeats over data.seed /
training.seed / data.fold), the best chosen by mean validation value, every other compared with it
(paired tests, Holm-adjusted, a verdict). Printed to stdout; files are written only where told:
``--out DIR`` (summary.json / .md / .csv / .png), or ``--write`` into the first folder (a sweep's own
summary). Two run folders, or ``--a`` / ``--b`` filters, compare head to head on the same test texts
(bootstrap intervals, McNemar, per-class F1, the texts one got right and the other wrong).
``--json``: one JSON object on stdout (head to head: ``metric``, ``difference``, ``ci95``,
``p_value``, ``test`` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_pipeline.artifacts.atomic import atomic_path, to_json
from finetune_pipeline.artifacts.names import CONFIG_DIR
from finetune_pipeline.cli.errors import exit_status
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.logs import log_to_stderr
from finetune_pipeline.sweep.compare import METRICS, compare
from finetune_pipeline.sweep.head_to_head import head_to_head, render, select, side_of_run
from finetune_pipeline.sweep.jobs import find_job_folders, read_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="finetune-compare",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders or run folders")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="best",
        help="sort key of the jobs table and the plot: each job's best validation value (default) "
        "or a test metric (the best configuration is always chosen on validation)",
    )
    parser.add_argument("--out", type=Path, help="write summary.* (or the head-to-head report) into this folder")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write summary.* into the first folder given (replacing a sweep's own summary)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--a", metavar="KEY=VALUE[,...]", help="head to head: the configuration A (with --b)")
    parser.add_argument("--b", metavar="KEY=VALUE[,...]", help="head to head: the configuration B (with --a)")
    args = parser.parse_args(argv)
    log_to_stderr()
    return exit_status(lambda: sys.stdout.write(run(args) + "\n"), "the summary files are as before or complete")


def run(args: argparse.Namespace) -> str:
    if args.write and args.out:
        raise PipelineError("--write writes into the first folder, --out into another: give one of them")
    if (args.a is None) != (args.b is None):
        raise PipelineError("--a and --b go together: the two configurations to compare")
    single_runs = len(args.paths) == 2 and all((p / CONFIG_DIR).is_dir() for p in args.paths)  # run folders
    if args.a is not None or single_runs:
        return head_to_head_text(args)
    return compare(args.paths, args.metric, args.out or (args.paths[0] if args.write else None), as_json=args.json)


def head_to_head_text(args: argparse.Namespace) -> str:
    if args.a is not None:
        jobs = [read_job(f) for f in find_job_folders(args.paths)]
        a, b = select(jobs, args.a), select(jobs, args.b)
    else:
        a, b = (side_of_run(p, read_job(p)) for p in args.paths)
    report = head_to_head(a, b)
    text = render(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "head_to_head.json") as tmp:
            tmp.write_text(to_json(report, indent=1) + "\n", encoding="utf-8")
        with atomic_path(args.out / "head_to_head.md") as tmp:
            tmp.write_text("".join(f"    {line}\n" for line in text.split("\n")), encoding="utf-8")  # a code block
    return to_json(report, indent=1) if args.json else text


if __name__ == "__main__":
    sys.exit(main())
