"""Compare runs of a sweep: a table sorted by a metric, the best job, mean ± std over seeds, plots.

Writes summary.csv, summary.md and summary.png into the first folder given (or ``out_dir``); the
command is ``finetune-compare`` (``cli/compare.py``).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from pathlib import Path

from finetune_pipeline.artifacts.atomic import atomic_path
from finetune_pipeline.sweep.jobs import Job, find_job_folders, read_job

log = logging.getLogger(__name__)

METRICS = ("best", "test/accuracy", "test/macro_f1")  # "best": each job's best validation value
SEED_KEY = "data.seed"


def metric_value(job: Job, metric: str) -> float | None:
    """The job's value of ``metric``; None for a job that did not finish as ``ok`` (failed, diverged,
    stopped, corrupt, incomplete): such a job is never ranked or called best."""
    if job.status != "ok":
        return None
    return {"best": job.best_value, "test/accuracy": job.test_accuracy, "test/macro_f1": job.test_macro_f1}[metric]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs (the swept parameters)."""
    keys = sorted({k for j in jobs for k in j.overrides})
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Best first; a loss is better when lower; failed and incomplete jobs last."""
    lower_is_better = metric == "best" and any(j.best_metric.endswith("loss") for j in jobs if j.status == "ok")

    def key(job: Job) -> tuple[int, float]:
        value = metric_value(job, metric)
        if value is None:
            return (1, 0.0)
        return (0, value if lower_is_better else -value)

    return sorted(jobs, key=key)


def table_rows(jobs: list[Job], keys: list[str], root: Path) -> list[dict[str, str]]:
    rows = []
    for rank, job in enumerate(jobs, start=1):
        rows.append({
            "rank": str(rank), "job": _relative(job.folder, root), **{k: job.overrides.get(k, "") for k in keys},
            "best val": _fmt(job.best_value), "metric": job.best_metric, "best epoch": str(job.best_epoch or ""),
            "test acc": _fmt(job.test_accuracy), "test macro-F1": _fmt(job.test_macro_f1),
            "time s": "" if job.seconds is None else f"{job.seconds:.1f}",
            "status": job.status if not job.error else f"{job.status}: {job.error}",
        })
    return rows


def seed_rows(jobs: list[Job], keys: list[str]) -> list[dict[str, str]]:
    """Mean ± std over seeds, for groups of jobs that differ only in data.seed."""
    if SEED_KEY not in keys:
        return []
    other = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status == "ok":
            groups.setdefault(tuple(job.overrides.get(k, "") for k in other), []).append(job)
    rows = []
    for values, members in groups.items():
        if len(members) < 2:
            continue
        row = {**dict(zip(other, values)), "seeds": str(len(members))}
        for name, get in (("best val", lambda j: j.best_value), ("test acc", lambda j: j.test_accuracy),
                          ("test macro-F1", lambda j: j.test_macro_f1)):
            xs = [get(j) for j in members]
            row[name] = f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"
        rows.append(row)
    return rows


def render_text(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def render_markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r.get(c, "").replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(jobs: list[Job], keys: list[str], metric: str, path: Path) -> None:
    """One panel per swept parameter: the metric of each finished job against its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in jobs if metric_value(j, metric) is not None]
    panels = keys or ["job"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        labels = [j.overrides.get(key, j.folder.name) for j in done]
        numeric = all(_is_number(v) for v in labels)
        xs = [float(v) for v in labels] if numeric else labels
        ax.scatter(xs, [metric_value(j, metric) for j in done])
        if numeric and len({*xs}) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")  # learning rates and the like
        ax.set_xlabel(key)
        ax.set_ylabel(metric if metric != "best" else (done[0].best_metric if done else "best"))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def compare(paths: list[Path], metric: str = "best", out_dir: Path | None = None) -> str:
    """Read the jobs, write summary.csv/.md/.png into ``out_dir`` (default: the first path); return the text table."""
    jobs = sort_jobs([read_job(f) for f in find_job_folders(paths)], metric)
    out_dir = out_dir or paths[0]
    keys = swept_keys(jobs)
    rows = table_rows(jobs, keys, out_dir)
    best = next((j for j in jobs if metric_value(j, metric) is not None), None)
    if best is not None:
        rows[0]["rank"] = "1 *"
    by_seed = seed_rows(jobs, keys)

    with atomic_path(out_dir / "summary.csv") as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    best_line = (f"Best job by {metric}: {best.folder} ({_fmt(metric_value(best, metric))})" if best
                 else "No job finished.")
    md = [f"# Sweep summary\n\n{best_line}\n", render_markdown(rows)]
    if by_seed:
        md += ["\n## Mean ± std over seeds\n", render_markdown(by_seed)]
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    plot(jobs, keys, metric, out_dir / "summary.png")

    text = [render_text(rows), "", best_line]
    if by_seed:
        text += ["", "mean ± std over seeds:", render_text(by_seed)]
    text += ["", f"wrote {out_dir / 'summary.csv'}, summary.md, summary.png"]
    return "\n".join(text)


def _fmt(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _relative(folder: Path, root: Path) -> str:
    try:
        return str(folder.relative_to(root)) or "."
    except ValueError:
        return str(folder)


