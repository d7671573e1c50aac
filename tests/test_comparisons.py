"""Comparisons on real (tiny) runs: stratified k-fold, repeats paired by seed, head to head through
``finetune-compare`` (two runs, or two configurations of a folder of jobs), its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_pipeline.cli.compare import main as compare_main
from finetune_pipeline.sweep.configurations import Predictions


@pytest.fixture(scope="module")
def runs(module_project):
    """Two head sizes x seeds 1, 2 (jobs of one "sweep" folder, overrides as Hydra records them), and
    a 3-fold cross-validation."""
    project, train_run = module_project
    made = {}
    for dim in (8, 32):
        for seed in (1, 2):
            name = f"sweep/dim{dim}-seed{seed}"
            run = train_run(name, f"model.hidden_dim={dim}", f"data.seed={seed}", "training.learning_rate=3e-3")
            (run / ".hydra").mkdir(exist_ok=True)
            (run / ".hydra" / "overrides.yaml").write_text(f"- model.hidden_dim={dim}\n- data.seed={seed}\n")
            made[(dim, seed)] = run
    folds = [train_run(f"kfold-{i}", "data.split=kfold", "data.folds=3", f"data.fold={i}") for i in range(3)]
    return project, made, folds


def test_kfold_tests_every_record_exactly_once_and_encodes_once(runs):
    from helpers import processed_folder

    project, _, folds = runs
    tested = [
        json.loads(line)["text"]
        for run in folds
        for line in (run / "evaluation" / "test" / "predictions.jsonl").read_text(encoding="utf-8").split("\n")
        if line
    ]
    records = json.loads((processed_folder(project) / "combined_dataset.json").read_text(encoding="utf-8"))
    assert sorted(tested) == sorted({r["input"] for r in records}) and len(tested) == len(set(tested))
    logs = [(run / "train.log").read_text() for run in folds]
    assert "fold 0 of 3" in logs[0] and "fold 2 of 3" in logs[2]
    assert all("feature cache: hit" in log for log in logs[1:])  # the folds share one encoding of the texts


def test_two_runs_head_to_head(runs, capsys):
    _, made, _ = runs
    a, b = made[(32, 1)], made[(8, 1)]
    assert compare_main([str(a), str(b), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report)[:2] == ["a", "b"] and {"metric", "difference", "ci95", "p_value", "test"} <= set(report)
    pa, pb = Predictions.read(a), Predictions.read(b)
    right_a, right_b = pa.y_pred == pa.y_true, pb.y_pred == pb.y_true
    assert report["difference"] == pytest.approx(right_a.mean() - right_b.mean())
    assert report["ci95"][0] <= report["difference"] <= report["ci95"][1] and 0 <= report["p_value"] <= 1
    assert report["accuracy"]["a_right_b_wrong"] == int(np.sum(right_a & ~right_b))
    assert len(report["a_right_b_wrong"]) == min(20, int(np.sum(right_a & ~right_b)))
    assert all(
        r["confidence"] >= s["confidence"] for r, s in zip(report["a_right_b_wrong"], report["a_right_b_wrong"][1:])
    )
    assert [c["label"] for c in report["per_class_f1"]] == pa.labels
    assert compare_main([str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "McNemar p =" in text and "verdict (accuracy):" in text and "A right, B wrong" in text


def test_runs_tested_on_different_texts_are_refused(runs, caplog, tmp_path):
    _, made, _ = runs
    assert compare_main([str(made[(32, 1)]), str(made[(8, 2)]), "--out", str(tmp_path / "report")]) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "were tested on different texts" in error and not (tmp_path / "report").exists()


def test_configurations_of_a_folder_head_to_head_pair_by_seed(runs, capsys, tmp_path):
    _project, made, _ = runs
    sweep = made[(8, 1)].parent
    assert (
        compare_main(
            [
                str(sweep),
                "--a",
                "model.hidden_dim=32",
                "--b",
                "model.hidden_dim=8",
                "--json",
                "--out",
                str(tmp_path / "h2h"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert len(report["pairs"]) == 2 and report["texts"] == sum(
        len(Predictions.read(made[(32, s)]).texts) for s in (1, 2)
    )
    assert {p[0].rsplit("seed", 1)[1] == p[1].rsplit("seed", 1)[1] for p in report["pairs"]} == {True}
    assert (tmp_path / "h2h" / "head_to_head.json").is_file() and (tmp_path / "h2h" / "head_to_head.md").is_file()


def test_a_folder_of_repeats_is_summarised_without_writing_unless_told(runs, capsys, tmp_path):
    _, made, _ = runs
    sweep = made[(8, 1)].parent
    before = sorted(p.name for p in sweep.iterdir())
    assert compare_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "Best configuration by val/macro_f1 mean over 2 repeat(s)" in out
    assert sorted(p.name for p in sweep.iterdir()) == before  # printed only
    assert compare_main([str(sweep), "--out", str(tmp_path / "s"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {c["config"] for c in summary["configs"]} == {"model.hidden_dim=8", "model.hidden_dim=32"}
    assert all(c["n"] == 2 and c["metrics"]["test/accuracy"]["method"] == "t over repeats" for c in summary["configs"])
    for comparison in summary["comparisons"]:
        assert comparison["n_pairs"] == 2 and comparison["test"] == "paired t-test over repeats"
        assert set(comparison) >= {"config", "against", "metric", "mean_difference", "ci95", "p_value", "verdict"}
    assert (tmp_path / "s" / "summary.json").is_file() and (tmp_path / "s" / "summary.png").is_file()
    assert compare_main([str(sweep), "--write"]) == 0 and (sweep / "summary.md").is_file()


def test_repeats_in_process_train_each_seed_into_its_folder_and_return_the_mean(project, tiny_cache, monkeypatch):
    """Fast equivalent of the next test (slow: through train.py)."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from hydra.types import RunMode

    from finetune_pipeline.cli.train import run_repeats
    from finetune_pipeline.config.load import to_config
    from finetune_pipeline.runtime.distributed import SINGLE
    from helpers import IN_PROCESS, REPO, with_logger

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    overrides = [*IN_PROCESS, f"backbone.path={tiny_cache}", "training.epochs=1", "repeats=[3,4]"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=with_logger(overrides))
    run_dir = project / "runs" / "repeated"
    hydra_cfg = SimpleNamespace(
        runtime=SimpleNamespace(output_dir=str(run_dir)),
        mode=RunMode.RUN,
        sweep=SimpleNamespace(dir=str(project)),
        job=SimpleNamespace(num=0),
    )
    written = {}
    mean = run_repeats(
        cfg,
        to_config(cfg),
        SINGLE,
        hydra_cfg,
        overrides,
        lambda c, o: lambda folder: written.setdefault(folder.name, (c.data.seed, o)),
    )
    values = [json.loads((run_dir / f"seed-{s}" / "metrics.json").read_text())["best"]["value"] for s in (3, 4)]
    assert mean == pytest.approx(sum(values) / 2)
    assert json.loads((run_dir / "repeats.json").read_text())["values"] == pytest.approx(values)
    assert (
        written["seed-3"][0] == 3
        and written["seed-3"][1][-1] == "data.seed=3"
        and "repeats=[3,4]" not in written["seed-3"][1]
    )


@pytest.mark.slow
def test_repeats_train_once_per_seed_and_return_the_mean(project, tiny_cache):
    from helpers import run_folders, run_train

    run_train(
        project, "repeats=[1,2]", "training.epochs=1", "data.max_length=32", "model.hidden_dim=8", tiny_cache=tiny_cache
    )
    folders = run_folders(project)
    assert [f.name for f in folders] == ["seed-1", "seed-2"] and folders[0].parent == folders[1].parent
    record = json.loads((folders[0].parent / "repeats.json").read_text())
    values = [json.loads((f / "metrics.json").read_text())["best"]["value"] for f in folders]
    assert record["seeds"] == [1, 2] and record["values"] == pytest.approx(values)
    assert record["mean"] == pytest.approx(sum(values) / 2) and record["n"] == 2 and len(record["ci95"]) == 2
    for seed, folder in zip((1, 2), folders):
        assert f"data.seed={seed}" in (folder / ".hydra" / "overrides.yaml").read_text()
        assert f"seed: {seed}" in (folder / ".hydra" / "config.yaml").read_text()
    summary = json.loads(subprocess_compare(folders[0].parent))
    assert [c["n"] for c in summary["configs"]] == [2]  # one configuration, two repeats


def subprocess_compare(folder) -> str:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert compare_main([str(folder), "--json"]) == 0
    return out.getvalue()
