"""Sweeps as a first-class result: the summary callback, failed jobs, the compare command."""

import csv
import json
import os
import subprocess
import sys

import pytest

from finetune_pipeline.cli.compare import main as compare_main
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.sweep.compare import compare
from helpers import REPO, run_train, write_json, write_run_metrics

FAST = ["training.epochs=2", "data.max_length=32", "training.learning_rate=3e-3"]


def fake_job(folder, overrides, best=None, test_acc=None, failed=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if failed:
        write_json(folder / "failed.json", {"error": failed, "type": "PipelineError"})
    elif best is not None:
        write_run_metrics(folder, best, test_acc)


def test_compare_sorts_flags_the_best_and_writes_files(tmp_path):
    fake_job(tmp_path / "0", ["model.hidden_dim=256", "training.learning_rate=1e-4"], best=0.70, test_acc=0.72)
    fake_job(tmp_path / "1", ["model.hidden_dim=512", "training.learning_rate=1e-4"], best=0.90, test_acc=0.88)
    fake_job(tmp_path / "2", ["model.hidden_dim=256", "training.learning_rate=1e-3"], failed="boom: bad config")
    fake_job(tmp_path / "3", ["model.hidden_dim=512", "training.learning_rate=1e-3"])  # no metrics yet

    text = compare([tmp_path])  # printed only: nothing written
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "summary.md").exists()
    assert "Best configuration by val/macro_f1 mean over 1 repeat(s): model.hidden_dim=512 (" in text  # what varies
    assert "one repeat per configuration" in text  # no uncertainty for the choice: said so

    compare([tmp_path], out_dir=tmp_path)
    with open(tmp_path / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["1", "0", "2", "3"]
    assert rows[0]["model.hidden_dim"] == "512" and rows[0]["test acc"] == "0.8800"
    assert rows[2]["status"] == "failed: boom: bad config" and rows[3]["status"] == "incomplete"
    assert set(rows[0]) >= {"training.learning_rate", "best val", "best epoch", "test macro-F1", "time s"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_config"]["overrides"] == {"model.hidden_dim": "512", "training.learning_rate": "1e-4"}
    assert summary["best_config"]["selected_by"] == "val/macro_f1 mean"
    assert [c["n"] for c in summary["configs"]] == [1, 1]
    assert "| model.hidden_dim=512 * | 1 | 0.9000 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_groups_repeats_into_configurations_with_intervals_and_verdicts(tmp_path):
    accs = {(256, 1): 0.80, (256, 2): 0.84, (256, 3): 0.81, (512, 1): 0.90, (512, 2): 0.92, (512, 3): 0.91}
    for i, ((dim, seed), acc) in enumerate(accs.items()):
        fake_job(tmp_path / str(i), [f"model.hidden_dim={dim}", f"data.seed={seed}"], best=acc, test_acc=acc)
    compare([tmp_path], out_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_config = {c["config"]: c for c in summary["configs"]}
    big = by_config["model.hidden_dim=512"]["metrics"]["test/accuracy"]
    assert by_config["model.hidden_dim=512"]["n"] == 3 and big["mean"] == pytest.approx(0.91)
    assert big["std"] == pytest.approx(0.01) and big["ci95"] == pytest.approx(
        [0.91 - 4.302653 * 0.01 / 3**0.5, 0.91 + 4.302653 * 0.01 / 3**0.5]
    )
    assert summary["best_config"]["config"] == "model.hidden_dim=512"
    [vs] = [c for c in summary["comparisons"] if c["metric"] == "test/accuracy"]
    assert vs["config"] == "model.hidden_dim=256" and vs["against"] == "model.hidden_dim=512"
    assert vs["n_pairs"] == 3 and vs["mean_difference"] == pytest.approx((-0.10 - 0.08 - 0.10) / 3)
    from scipy import stats

    expected = stats.ttest_rel([0.80, 0.84, 0.81], [0.90, 0.92, 0.91])
    assert vs["p_value"] == pytest.approx(expected.pvalue) and vs["verdict"] == "worse"
    md = (tmp_path / "summary.md").read_text()
    assert "## Against the best configuration" in md and "| worse |" in md


def test_compare_command_line_errors_are_one_line(tmp_path, caplog):
    assert compare_main([str(tmp_path / "absent")]) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.endswith("absent: not a folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no run folders"):
        compare([tmp_path / "empty"])


@pytest.mark.slow
def test_sweep_over_lr_and_head_size_writes_a_summary(project, tiny_cache):
    proc = run_train(
        project,
        "-m",
        "training.learning_rate=1e-3,3e-3",
        "model.hidden_dim=8,16",
        "training.epochs=1",
        "data.max_length=32",
        tiny_cache=tiny_cache,
    )
    [sweep] = [p.parent for p in (project / "outputs/multirun").rglob("multirun.yaml")]
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 4
    for job in jobs:
        overrides = (job / ".hydra/overrides.yaml").read_text()
        assert overrides.count("training.learning_rate=") == 1 and overrides.count("model.hidden_dim=") == 1
    with open(sweep / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert {(r["training.learning_rate"], r["model.hidden_dim"]) for r in rows} == {
        ("0.001", "8"),
        ("0.001", "16"),
        ("0.003", "8"),
        ("0.003", "16"),
    }  # as Hydra writes them
    best = json.loads((sweep / rows[0]["job"] / "metrics.json").read_text())["best"]["value"]
    assert float(rows[0]["best val"]) == pytest.approx(best, abs=1e-4)
    assert all(float(rows[0]["best val"]) >= float(r["best val"]) for r in rows)
    assert "sweep summary" in proc.stdout


# A failing job is recorded and the sweep goes on: test_tracking.py::test_a_sweep_is_a_parent_run_...


@pytest.mark.slow
def test_compare_console_script_on_a_real_sweep(project, tiny_cache):
    run_train(project, "-m", "model.hidden_dim=8,16", "training.epochs=1", "data.max_length=32", tiny_cache=tiny_cache)
    [sweep] = [p.parent for p in (project / "outputs/multirun").rglob("multirun.yaml")]
    out = project / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_pipeline.cli.compare",
            str(sweep),
            str(sweep / "0"),
            "--metric",
            "test/macro_f1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Best configuration by val/macro_f1 mean" in proc.stdout
    assert len(list(csv.DictReader((out / "summary.csv").open()))) == 2  # job 0, given twice, is listed once


@pytest.mark.slow
def test_optuna_search_runs_three_trials_and_continues_its_study(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "training.epochs=1", "data.max_length=32"]
    run_train(project, *args, tiny_cache=tiny_cache)
    search = project / "outputs/optuna/head_search"
    storage = f"sqlite:///{search / 'optuna.db'}"
    study = optuna.load_study(study_name="head_search", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3
    assert {"training.learning_rate", "model.hidden_dim", "model.dropout"} <= set(trials[0].params)
    # the objective is each job's best validation macro-F1, as written in its metrics.json
    values = sorted(t.value for t in trials)
    written = sorted(json.loads(p.read_text())["best"]["value"] for p in search.rglob("metrics.json"))
    assert values == pytest.approx(written)
    assert (search / "summary.csv").is_file() and (search / "summary.json").is_file()

    run_train(project, *args, tiny_cache=tiny_cache)  # the same command continues the study
    study = optuna.load_study(study_name="head_search", storage=storage)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 6


@pytest.mark.slow
def test_optuna_with_repeats_maximises_the_mean_over_seeds(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    run_train(
        project,
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=repeated",
        "repeats=[1,2]",
        "training.epochs=1",
        "data.max_length=32",
        tiny_cache=tiny_cache,
    )
    search = project / "outputs/optuna/repeated"
    study = optuna.load_study(study_name="repeated", storage=f"sqlite:///{search / 'optuna.db'}")
    trials = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    means = sorted(json.loads(p.read_text())["mean"] for p in search.rglob("repeats.json"))
    assert len(trials) == 2 and trials == pytest.approx(means)  # each trial's objective: its repeats' mean
    summary = json.loads((search / "summary.json").read_text())
    assert [c["n"] for c in summary["configs"]] == [2, 2] and summary["best_config"]["selected_by"].endswith("mean")
    best = next(c for c in summary["configs"] if c["config"] == summary["best_config"]["config"])
    assert best["metrics"]["val/macro_f1"]["ci95"] is not None  # the study summary shows the best trial's interval


@pytest.mark.slow  # ~25 s: Hydra's joblib plugin, spawning worker processes
def test_joblib_launcher_runs_two_jobs_in_parallel_processes(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    run_train(project, "training.epochs=1", "data.max_length=32", tiny_cache=tiny_cache)  # warm the caches
    run_train(
        project,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.hidden_dim=8,16",
        "training.epochs=1",
        "data.max_length=32",
        tiny_cache=tiny_cache,
    )
    [sweep] = [p.parent for p in (project / "outputs/multirun").rglob("multirun.yaml")]
    rows = list(csv.DictReader((sweep / "summary.csv").open(encoding="utf-8")))
    assert sorted(r["model.hidden_dim"] for r in rows) == ["16", "8"] and all(r["status"] == "ok" for r in rows)


@pytest.mark.slow  # ~16 s: submitit's local executor
def test_submitit_local_launcher_runs_the_sweep(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_train(
        project,
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "model.hidden_dim=8,16",
        "training.epochs=1",
        "data.max_length=32",
        tiny_cache=tiny_cache,
    )
    [sweep] = [p.parent for p in (project / "outputs/multirun").rglob("multirun.yaml")]
    rows = list(csv.DictReader((sweep / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert list(sweep.rglob("*_submitit_log.out")) or (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_slurm_launcher_config_composes(project):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "hydra", "hydra/launcher=slurm", "model.hidden_dim=8"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "partition: gpu" in proc.stdout and "max_num_timeout: 3" in proc.stdout
    assert "submitit_slurm" in proc.stdout or "SlurmLauncher" in proc.stdout


@pytest.mark.parametrize(
    "overrides, check",
    [
        (
            ["hparams_search=optuna"],
            lambda h: (
                h.sweeper.direction == "maximize"
                and set(h.sweeper.params) == {"training.learning_rate", "model.hidden_dim", "model.dropout"}
            ),
        ),
        (["hydra/launcher=slurm"], lambda h: h.launcher.partition == "gpu" and h.launcher.max_num_timeout == 3),
    ],
)
def test_search_and_launcher_configs_compose(overrides, check):
    """The fast in-process equivalent of the slow Optuna and SLURM command-line tests."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert check(cfg.hydra)


def test_the_sweeps_parent_run_gets_the_best_configurations_interval_and_the_verdicts(tmp_path):
    from finetune_pipeline.tracking.sweep_runs import SUMMARY_FILES, parent_figures

    for i, ((dim, seed), acc) in enumerate({(256, 1): 0.80, (256, 2): 0.84, (512, 1): 0.90, (512, 2): 0.93}.items()):
        fake_job(tmp_path / str(i), [f"model.hidden_dim={dim}", f"data.seed={seed}"], best=acc, test_acc=acc)
    compare([tmp_path], out_dir=tmp_path)
    metrics, tags = parent_figures(json.loads((tmp_path / "summary.json").read_text()))
    assert metrics["best_config_test_accuracy_mean"] == pytest.approx(0.915)
    assert metrics["best_config_test_accuracy_ci95_low"] < 0.915 < metrics["best_config_test_accuracy_ci95_high"]
    assert metrics["best_config_val_macro_f1_std"] == pytest.approx(0.0212132, abs=1e-6)
    assert tags["best_config"] == "model.hidden_dim=512" and tags["best_config.repeats"] == "2"
    assert tags["verdicts.test_accuracy"] == "worse: 1"  # -0.10 and -0.09 on two paired seeds
    assert SUMMARY_FILES[0] == "summary.json" and parent_figures({}) == ({}, {})


def test_configurations_are_named_by_what_varies_and_how_keys_do_not_split_them(tmp_path):
    jobs = [
        (["backbone=tiny", "model.hidden_dim=8", "data.seed=1", "logger=none"], 0.5),
        (["backbone=tiny", "model.hidden_dim=8", "data.seed=2", "logger=mlflow", "training.device=cpu"], 0.6),
        (["backbone=tiny", "model.hidden_dim=16", "data.seed=1", "logger=none"], 0.7),
    ]
    for i, (overrides, acc) in enumerate(jobs):
        fake_job(tmp_path / str(i), overrides, best=acc, test_acc=acc)
    compare([tmp_path], out_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted((c["config"], c["n"]) for c in summary["configs"]) == [
        ("model.hidden_dim=16", 1),
        ("model.hidden_dim=8", 2),
    ]
    assert summary["best_config"]["overrides"] == {"backbone": "tiny", "model.hidden_dim": "16"}
