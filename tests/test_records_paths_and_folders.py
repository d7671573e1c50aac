"""Records stay trustworthy under misuse (1/3): user-given paths, run-folder ownership, sweep folders.

Every refusal is one line, and the folder it concerns is left byte-identical.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.cli.run_guard import RunGuard, check_sweep
from finetune_pipeline.cli.train import sweep_job_mode
from finetune_pipeline.errors import PipelineError, RunFolderRefused
from finetune_pipeline.training.recipe import train
from helpers import IN_PROCESS, REPO, compose_config, run_train


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: equal snapshots mean nothing was touched (the
    ``.lock`` file aside: it names the last process that asked for the folder)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def finished(module_project):
    """A finished tiny run (frozen head) and the project it lives in."""
    project, train_run = module_project
    return project, train_run("done")


def labelled(path: Path, run: Path) -> Path:
    labels = [c["label"] for c in json.loads((run / "id_to_label.json").read_text()).values()]
    path.write_text(
        "".join(json.dumps({"input": f"text {i}", "output": label}) + "\n" for i, label in enumerate(labels))
    )
    return path


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- 1. paths from user input stay inside their folder ---------------------------------------------


@pytest.mark.parametrize("name", ["..", "../..", "/tmp/elsewhere", "a/b", "", ".", ".hidden", "a\\b", " padded"])
def test_evaluate_refuses_report_names_that_are_not_plain(finished, tmp_path, caplog, name):
    _project, run = finished
    before, parent = snapshot(run), snapshot(run.parent)
    code = main(
        [
            "evaluate",
            str(run),
            "--input",
            str(labelled(tmp_path / "h.jsonl", run)),
            "--name",
            name,
            "--precision",
            "fp32",
        ]
    )
    assert code == 1 and len(errors(caplog)) == 1 and "report name" in errors(caplog)[0]
    assert snapshot(run) == before and snapshot(run.parent) == parent
    assert not Path("/tmp/elsewhere").exists()


@pytest.mark.parametrize("stem", ["test", "TEST", "Test"])
def test_evaluate_never_replaces_the_training_runs_test_report(finished, tmp_path, caplog, stem):
    _project, run = finished
    before = snapshot(run / "evaluation" / "test")
    code = main(
        ["evaluate", str(run), "--input", str(labelled(tmp_path / f"{stem}.jsonl", run)), "--precision", "fp32"]
    )
    assert code == 1 and "reserved for the training run's test report" in errors(caplog)[0]
    code = main(
        [
            "evaluate",
            str(run),
            "--input",
            str(labelled(tmp_path / f"{stem}.jsonl", run)),
            "--name",
            stem,
            "--overwrite",
            "--precision",
            "fp32",
        ]
    )
    assert code == 1 and snapshot(run / "evaluation" / "test") == before


def test_evaluate_keeps_an_existing_report_unless_told_to_overwrite(finished, tmp_path, caplog):
    _project, run = finished
    data = labelled(tmp_path / "holdout.jsonl", run)
    assert main(["evaluate", str(run), "--input", str(data), "--precision", "fp32"]) == 0
    first = snapshot(run / "evaluation" / "holdout")
    assert main(["evaluate", str(run), "--input", str(data), "--precision", "fp32"]) == 1
    assert "pass --overwrite" in errors(caplog)[-1] and snapshot(run / "evaluation" / "holdout") == first
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:3]))  # another holdout.jsonl: 3 records
    assert main(["evaluate", str(run), "--input", str(data), "--overwrite", "--precision", "fp32"]) == 0
    assert json.loads((run / "evaluation" / "holdout" / "report.json").read_text())["texts"] == 3


def test_predict_never_writes_over_its_input_or_the_run(finished, tmp_path, caplog):
    _project, run = finished
    texts = tmp_path / "in" / "texts.txt"
    texts.parent.mkdir()
    texts.write_text("one text\nanother text\n")
    os.symlink(texts, tmp_path / "link.txt")
    os.link(texts, tmp_path / "hard.txt")
    content = texts.read_bytes()
    for output in (
        texts,
        tmp_path / "in" / ".." / "in" / "texts.txt",
        tmp_path / "link.txt",
        tmp_path / "hard.txt",
        run / "metrics.json",
        run / "best_model.pt",
        tmp_path,
    ):
        before = snapshot(run)
        caplog.clear()
        assert main(["predict", str(run), "--input", str(texts), "--output", str(output), "--precision", "fp32"]) == 1
        assert len(errors(caplog)) == 1, output
        assert texts.read_bytes() == content and snapshot(run) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "0"], "--top-k: must be >= 1"),
        (["--batch-size", "-1"], "--batch-size: must be >= 1"),
        (["--batch-size", "many"], "expected a whole number"),
        (["--checkpoint", "../x.pt"], "invalid choice"),
    ],
)
def test_out_of_range_command_line_values_are_one_line(finished, tmp_path, capsys, args, message):
    _project, run = finished
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(run), "--input", str(tmp_path / "x.txt"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0]


# -- 2. a run folder has one writer; finished results are never overwritten -------------------------


def test_a_new_run_refuses_a_folder_that_holds_results(finished, monkeypatch):
    project, run = finished
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    before = snapshot(run)
    with pytest.raises(RunFolderRefused, match="already holds a finished run"):
        train(compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}"]), run)
    assert snapshot(run) == before


def test_a_second_writer_is_refused_naming_the_holders_pid(finished, tmp_path, monkeypatch):
    project, _ = finished
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    folder = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from finetune_pipeline.artifacts.run_folder import claim\n"
                "with claim(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"
            ),
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderRefused, match=f"another process \\(PID {holder.pid}\\) is writing"):
            train(compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}"]), folder, resume=True)
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(RunFolderRefused, match=r"no train_state.pt to resume from"):  # the lock went with it
        train(compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}"]), folder, resume=True)


def hydra_config(overrides: list[str], multirun: bool = False):
    """The composed config with its ``hydra`` node, as callbacks get it; sweep values (``a,b``) are
    kept as the command line's task overrides only, as in a real multirun."""
    from omegaconf import open_dict

    plain = [o for o in overrides if "," not in o]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=plain, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = [o for o in overrides if not o.startswith("hydra.")]
    return cfg


@pytest.mark.parametrize(
    "value, message",
    [
        ("''", "resume= needs a run folder"),
        ("{file}", "is a file, not a run folder"),
        ("{missing}", "no such folder"),
        ("{empty}", "not a run folder (no .hydra/config.yaml"),
    ],
)
def test_resume_targets_are_checked_before_hydra_creates_anything(tmp_path, capsys, value, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    value = value.format(file=tmp_path / "file", missing=tmp_path / "missing", empty=tmp_path / "empty")
    cfg = hydra_config([f"resume={value}"])
    with pytest.raises(SystemExit) as exit_:
        RunGuard().on_run_start(cfg)
    [line] = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 1 and "[ERROR]" in line and message in line
    assert not (tmp_path / "missing").exists()


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    cfg = hydra_config([f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"])
    with pytest.raises(SystemExit):
        RunGuard().on_run_start(cfg)
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        f"{tmp_path / 'a_file' / 'run'}: cannot create the output folder ({tmp_path / 'a_file'} is a file)"
    )


@pytest.mark.slow
def test_the_command_line_refuses_a_finished_runs_folder_and_an_empty_resume(finished):
    project, run = finished
    before = snapshot(run)
    proc = run_train(
        project,
        f"hydra.run.dir={run}",
        "training.epochs=1",
        "data.max_length=32",
        tiny_cache=project / "tiny",
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert next(line for line in proc.stdout.splitlines() if "ERROR" in line).endswith(
        "continue a stopped run with resume=<folder>"
    )
    assert snapshot(run) == before  # .hydra/config.yaml included: Hydra no longer rewrites it first
    proc = run_train(project, "resume=", check=False)
    assert proc.returncode == 1 and "resume= needs a run folder" in proc.stderr + proc.stdout
    assert not (project / "outputs").exists()


# -- 3. a sweep's results always belong to the configuration that produced them ---------------------


def test_a_different_sweep_into_an_existing_sweep_folder_is_refused(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    old = hydra_config(["model.hidden_dim=8,16", f"hydra.sweep.dir={sweep}"], multirun=True)
    from omegaconf import OmegaConf

    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(old))
    check_sweep(
        hydra_config(["model.hidden_dim=8,16", f"hydra.sweep.dir={sweep}", "training.device=cpu"], multirun=True)
    )  # the same sweep (how-keys aside): may continue
    for overrides, named in (
        (["model.hidden_dim=512,1024"], "model.hidden_dim: 8,16 -> 512,1024"),
        (["model.hidden_dim=8,16", "training.learning_rate=0.1"], "training.learning_rate"),
    ):
        with pytest.raises(PipelineError, match=named):
            check_sweep(hydra_config([*overrides, f"hydra.sweep.dir={sweep}"], multirun=True))


def test_a_sweep_job_is_kept_or_resumed_only_under_its_own_config(finished, tmp_path):
    project, run = finished
    job = tmp_path / "0"
    import shutil

    shutil.copytree(run, job)
    from omegaconf import OmegaConf

    from finetune_pipeline.artifacts.run_folder import write_config_record

    stored = compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}"])
    write_config_record(job, OmegaConf.structured(stored), OmegaConf.create({"hydra": {}}), [])
    assert sweep_job_mode(job, stored) == "keep"
    other = compose_config(
        [
            *IN_PROCESS,
            f"backbone.path={project / 'tiny'}",
            "model.hidden_dim=512",
            "training.learning_rate=0.5",
            "training.device=cpu",
        ]
    )
    with pytest.raises(
        RunFolderRefused,
        match=r"job .*0 was run with another config \(model.hidden_dim: 16 -> 512; "
        r"training.learning_rate: 0.001 -> 0.5\)",
    ):
        sweep_job_mode(job, other)
    (job / "train_state.pt").write_bytes(b"state")
    assert sweep_job_mode(job, stored) == "resume"
    with pytest.raises(RunFolderRefused, match=r"training.learning_rate"):
        sweep_job_mode(job, other)


@pytest.mark.slow
def test_rerunning_a_sweep_folder_with_other_values_keeps_the_old_results(project, tiny_cache):
    sweep = project / "sweep"
    fast = ["training.epochs=1", "data.max_length=32", f"hydra.sweep.dir={sweep}"]
    run_train(project, "-m", "model.hidden_dim=8,16", *fast, tiny_cache=tiny_cache)
    before = snapshot(sweep)
    proc = run_train(project, "-m", "model.hidden_dim=512,1024", *fast, tiny_cache=tiny_cache, check=False)
    assert proc.returncode == 1 and "model.hidden_dim: 8,16 -> 512,1024" in proc.stdout + proc.stderr
    assert snapshot(sweep) == before


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dataset_path=data/raw/part-1.json"], "data.dataset_path=.* lies inside data.raw_dir"),
        (["data.label_mapping_path=data/raw/map.json"], "data.label_mapping_path=.* lies inside data.raw_dir"),
        (["data.cache_dir=data/raw"], "data.cache_dir=.* lies inside data.raw_dir"),
        (["data.dataset_path=data/p/c.json", "data.label_mapping_path=data/p/c.json"], "are the same file"),
        (["data.processed_dir=data/raw/processed"], "data.processed_dir=.* lies inside data.raw_dir"),
    ],
)
def test_preprocessing_and_the_cache_never_write_into_the_raw_data(overrides, message):
    with pytest.raises(PipelineError, match=message):
        compose_config(overrides)
