"""A sweep's summary: configurations with intervals, the best chosen on validation, verdicts, plots.

    summary.json  {"configs": [{"config", "overrides", "n", "jobs", "metrics": {name: {"mean", "std",
                   "ci95": [lo, hi], "n", "method"}}}], "best_config": {"config", "overrides", "selected_by",
                   "value"}, "comparisons": [{"config", "against", "metric", "mean_difference", "ci95", "p_value",
                   "p_value_holm", "n_pairs", "test", "verdict"}], "warnings": [...], "jobs": [...]}
    summary.md    the same for a person: the best configuration, a table with 95% intervals, the verdicts
    summary.csv   one row per job (its folder, overrides, values, status)
    summary.png   each configuration's mean with its 95% interval against each swept key

The statistics are ``sweep/configurations.py``'s. The sweep's callback writes these files into the
sweep folder; ``finetune-compare`` prints and writes only where told (``--out``, or ``--write``:
into the first folder).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from finetune_pipeline.artifacts.atomic import atomic_path, to_json
from finetune_pipeline.sweep.configurations import REPEAT_KEYS, Predictions, group, summarize
from finetune_pipeline.sweep.jobs import Job, find_job_folders, read_job

log = logging.getLogger(__name__)

METRICS = ("best", "test/accuracy", "test/macro_f1")  # "best": each job's best validation value


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
    lower_is_better = metric == "best" and _lower_is_better(jobs)

    def key(job: Job) -> tuple[int, float]:
        value = metric_value(job, metric)
        if value is None:
            return (1, 0.0)
        return (0, value if lower_is_better else -value)

    return sorted(jobs, key=key)


def _lower_is_better(jobs: list[Job]) -> bool:
    return any(j.best_metric.endswith("loss") for j in jobs if j.status == "ok")


def table_rows(jobs: list[Job], keys: list[str], root: Path) -> list[dict[str, str]]:
    rows = []
    for rank, job in enumerate(jobs, start=1):
        rows.append(
            {
                "rank": str(rank),
                "job": _relative(job.folder, root),
                **{k: job.overrides.get(k, "") for k in keys},
                "best val": _fmt(job.best_value),
                "metric": job.best_metric,
                "best epoch": str(job.best_epoch or ""),
                "test acc": _fmt(job.test_accuracy),
                "test macro-F1": _fmt(job.test_macro_f1),
                "time s": "" if job.seconds is None else f"{job.seconds:.1f}",
                "status": job.status if not job.error else f"{job.status}: {job.error}",
            }
        )
    return rows


def summary_of(jobs: list[Job], root: Path) -> dict:
    """summary.json's content for these jobs (finished ones grouped into configurations)."""
    done = [j for j in jobs if j.status == "ok"]
    selected_by = next((j.best_metric for j in done), "val")
    configs = group(
        [
            (
                _relative(j.folder, root),
                j.overrides,
                j.best_value,
                {"test/accuracy": j.test_accuracy, "test/macro_f1": j.test_macro_f1},
                (lambda folder=j.folder: Predictions.read(folder)),
            )
            for j in done
        ]
    )
    summary = summarize(configs, selected_by, lower_is_better=_lower_is_better(jobs))
    summary["repeat_keys"] = list(REPEAT_KEYS)
    summary["jobs"] = [
        {
            "job": _relative(j.folder, root),
            "overrides": j.overrides,
            "status": j.status,
            "error": j.error or None,
            "best_metric": j.best_metric or None,
            "best_value": j.best_value,
            "test/accuracy": j.test_accuracy,
            "test/macro_f1": j.test_macro_f1,
        }
        for j in jobs
    ]
    return summary


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


def config_rows(summary: dict) -> list[dict[str, str]]:
    best = (summary.get("best_config") or {}).get("config")
    selected_by = (summary.get("best_config") or {}).get("selected_by", "val").replace(" mean", "")
    rows = []
    for c in summary["configs"]:
        m = c["metrics"]
        rows.append(
            {
                "configuration": c["config"] + (" *" if c["config"] == best else ""),
                "n": str(c["n"]),
                f"{selected_by} (choice)": _with_ci(m.get(selected_by)),
                "test accuracy": _with_ci(m["test/accuracy"]),
                "test macro-F1": _with_ci(m["test/macro_f1"]),
            }
        )
    return rows


def comparison_rows(summary: dict) -> list[dict[str, str]]:
    return [
        {
            "configuration": c["config"],
            "metric": c["metric"],
            "difference vs best": ""
            if c["mean_difference"] is None
            else f"{c['mean_difference']:+.4f}" + (f" [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c["ci95"] else ""),
            "p (Holm)": "" if c.get("p_value_holm") is None else f"{c['p_value_holm']:.3g}",
            "pairs": str(c["n_pairs"]),
            "verdict": c["verdict"],
        }
        for c in summary["comparisons"]
    ]


def headline(summary: dict) -> list[str]:
    best = summary.get("best_config")
    if best is None:
        return ["No configuration finished."]
    config = next(c for c in summary["configs"] if c["config"] == best["config"])
    acc = config["metrics"]["test/accuracy"]
    lines = [
        f"Best configuration by {best['selected_by']} over {config['n']} repeat(s): {best['config']} "
        f"({_with_ci(config['metrics'][best['selected_by'].replace(' mean', '')])}; test accuracy "
        f"{_with_ci(acc)})"
    ]
    verdicts = [c for c in summary["comparisons"] if c["metric"] == "test/accuracy"]
    worse = sum(c["verdict"] == "worse" for c in verdicts)
    same = sum(c["verdict"].startswith("not distinguishable") for c in verdicts)
    better = sum(c["verdict"] == "better" for c in verdicts)
    if verdicts:
        lines.append(
            f"On test accuracy, against it: {worse} configuration(s) worse, {same} not distinguishable at "
            f"95%, {better} better (Holm-adjusted over {len(verdicts)} comparisons)"
        )
    lines += [f"Warning: {w}" for w in summary["warnings"]]
    return lines


READING = """How to read this: jobs that differ only in data.seed / training.seed / data.fold are repeats of
one configuration; the best configuration is the one with the best mean validation value (test
figures never choose). Intervals are 95%: a t-interval over repeats, or with one repeat a bootstrap
over that job's test texts. Each other configuration is compared with the best on the repeats they
share (same seed: same split and initialisation): a paired t-test over repeats on different splits,
a two-level bootstrap over repeats and texts when the repeats share one split (training.seed), or
with one repeat a paired bootstrap / permutation test over the shared test texts; p-values are
Holm-adjusted.
"not distinguishable at 95%" means the data cannot tell them apart: prefer the cheaper one, or add
repeats."""


def plot(summary: dict, keys: list[str], metric: str, path: Path) -> None:
    """One panel per swept key: each configuration's mean ``metric`` with its 95% interval; colour
    by the second swept key; a log axis for keys spanning 100x (learning rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = {"best": (summary.get("best_config") or {}).get("selected_by", "val").replace(" mean", "")}.get(
        metric, metric
    )
    configs = [c for c in summary["configs"] if c["metrics"].get(name) and _finite(c["metrics"][name]["mean"])]
    panels = [k for k in keys if k not in REPEAT_KEYS] or ["configuration"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        colour_key = next((k for k in panels if k != key), None)
        shades = sorted({c["overrides"].get(colour_key, "") for c in configs}) if colour_key else [""]
        values = [c["overrides"].get(key, c["config"]) for c in configs]
        numeric = all(_is_number(v) for v in values)
        log_axis = (
            numeric
            and values
            and min(float(v) for v in values) > 0
            and max(float(v) for v in values) / min(float(v) for v in values) >= 100
        )
        span = (max(float(v) for v in values) - min(float(v) for v in values)) if numeric and values else 0
        for shade_index, shade in enumerate(shades):
            members = [
                (v, c) for v, c in zip(values, configs) if not colour_key or c["overrides"].get(colour_key, "") == shade
            ]
            if not members:
                continue
            shift = shade_index - (len(shades) - 1) / 2  # side by side, so the intervals do not hide each other
            xs = [
                (float(v) * 1.06**shift if log_axis else float(v) + 0.015 * span * shift) if numeric else v
                for v, _ in members
            ]
            means = [c["metrics"][name]["mean"] for _, c in members]
            low = [
                m - c["metrics"][name]["ci95"][0] if c["metrics"][name]["ci95"] else 0
                for m, (_, c) in zip(means, members)
            ]
            high = [
                c["metrics"][name]["ci95"][1] - m if c["metrics"][name]["ci95"] else 0
                for m, (_, c) in zip(means, members)
            ]
            ax.errorbar(
                xs,
                means,
                yerr=[low, high],
                fmt="o",
                capsize=4,
                color=f"C{shade_index}",
                label=f"{colour_key}={shade}" if colour_key else None,
            )
        if log_axis:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{name} (mean, 95% CI)")
        if colour_key:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def compare(paths: list[Path], metric: str = "best", out_dir: Path | None = None, as_json: bool = False) -> str:
    """Read the jobs under ``paths``; write summary.json / .md / .csv / .png into ``out_dir`` when given
    (nothing is written otherwise); return the text a person reads, or with ``as_json`` summary.json's."""
    jobs = sort_jobs([read_job(f) for f in find_job_folders(paths)], metric)
    root = out_dir or paths[0]
    keys = swept_keys(jobs)
    rows = table_rows(jobs, keys, root)
    summary = summary_of(jobs, root)
    if out_dir is not None:
        write_summary(out_dir, summary, rows, keys, metric)
    if as_json:
        return to_json(summary, indent=1)
    text = [*headline(summary), "", render_text(config_rows(summary))]
    if summary["comparisons"]:
        text += ["", "against the best:", render_text(comparison_rows(summary))]
    text += ["", "jobs:", render_text(rows)]
    if out_dir is not None:
        text += ["", f"wrote {out_dir / 'summary.json'}, summary.md, summary.csv, summary.png"]
    return "\n".join(text)


def write_summary(out_dir: Path, summary: dict, rows: list[dict[str, str]], keys: list[str], metric: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(to_json(summary, indent=1) + "\n", encoding="utf-8")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out_dir / "summary.csv") as tmp:
        tmp.write_text(table.getvalue(), encoding="utf-8")
    md = [
        "# Sweep summary",
        "",
        *headline(summary),
        "",
        "## Configurations (95% intervals)",
        "",
        render_markdown(config_rows(summary)),
    ]
    if summary["comparisons"]:
        md += ["", "## Against the best configuration", "", render_markdown(comparison_rows(summary))]
    md += ["", READING, "", "## Jobs", "", render_markdown(rows)]
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    plot(summary, keys, metric, out_dir / "summary.png")


def _with_ci(m: dict | None) -> str:
    if not m or not _finite(m["mean"]):
        return ""
    return f"{m['mean']:.4f}" + (f" [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]" if m.get("ci95") else "")


def _fmt(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _relative(folder: Path, root: Path) -> str:
    try:
        return str(folder.relative_to(root)) or "."
    except ValueError:
        return str(folder)
