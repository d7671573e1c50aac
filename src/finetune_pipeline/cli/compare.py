"""``finetune-compare``: compare the runs of one or more sweeps.

    finetune-compare outputs/multirun/2026-11-25/12-00-00-000000 [more folders] [--metric test/macro_f1] [--out DIR]

Prints the table (best job flagged, mean ± std over seeds) and writes summary.csv, summary.md and
summary.png into the first folder given, or --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_pipeline.cli.errors import exit_status
from finetune_pipeline.runtime.logs import log_to_stderr
from finetune_pipeline.sweep.compare import METRICS, compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-compare", description="Compare the runs of one or more sweeps.")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders or run folders")
    parser.add_argument("--metric", choices=METRICS, default="best",
                        help="sort key: each job's best validation value (default) or a test metric")
    parser.add_argument("--out", type=Path, help="where summary.* go (default: the first folder)")
    args = parser.parse_args(argv)
    log_to_stderr()
    return exit_status(lambda: sys.stdout.write(compare(args.paths, args.metric, args.out) + "\n"),
                       "the summary files are as before or complete")


if __name__ == "__main__":
    sys.exit(main())
