"""Experiment tracking (logger= group): what MLflow, TensorBoard and W&B hold after real runs and
sweeps, read back with each tool's own reader; a tracker can never stop training."""

from __future__ import annotations

import csv
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_pipeline.runtime.signals import Interrupted
from finetune_pipeline.sweep.jobs import find_job_folders
from finetune_pipeline.training.divergence import Diverged
from helpers import Killed, compose_config, run_train

mlflow = pytest.importorskip("mlflow")


def client(project: Path):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'outputs' / 'mlflow.db'}")


def all_runs(project: Path):
    c = client(project)
    experiment = c.get_experiment_by_name("finetune-pipeline")
    return c.search_runs([experiment.experiment_id])


def history(c, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


def artifacts(c, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in c.list_artifacts(run_id, path):
        found |= artifacts(c, run_id, item.path) if item.is_dir else {item.path}
    return found


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def step_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "step"]


@pytest.fixture
def run(stoppable):
    """``run(name, *overrides, resume=False, stop_at=None)``: train() in this process; MLflow unless told otherwise."""

    def start(name, *overrides, **how):
        logger = [] if any(o.startswith("logger") for o in overrides) else ["logger=mlflow"]
        return stoppable(name, *logger, *overrides, **how)

    return start


def test_a_sweep_is_a_parent_run_with_a_child_per_job_and_a_failing_job_is_recorded_and_failed(project, tiny_cache):
    # max_length=1024 exceeds the tiny backbone's 512 positions: that job fails at validation; the next one runs
    proc = run_train(
        project,
        "-m",
        "logger=mlflow",
        "data.max_length=1024,32",
        "training.epochs=2",
        "model.hidden_dim=16",
        "precision=fp32",
        tiny_cache=tiny_cache,
        check=False,
    )
    assert proc.returncode == 1 and "1 job(s) did not finish" in proc.stdout
    [sweep] = [p.parent for p in (project / "outputs" / "multirun").rglob("multirun.yaml")]
    with open(sweep / "summary.csv", encoding="utf-8") as f:  # the job after the failure ran
        rows = {r["data.max_length"]: r["status"] for r in csv.DictReader(f)}
    assert rows["32"] == "ok" and rows["1024"].startswith("failed: data.max_length")

    c = client(project)
    runs = all_runs(project)
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = {
        r.data.tags["sweep.job"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(runs) == 3 and sorted(children) == ["0", "1"]
    assert parent.info.status == "FAILED" and "1 job(s) did not finish: 0 (failed)" in parent.data.tags["error"]
    assert {"summary.csv", "summary.md", "summary.png", "multirun.yaml"} <= artifacts(c, parent.info.run_id)

    for job, max_length in (("1", 32),):
        child, folder = children[job], sweep / job
        metrics = read_json(folder / "metrics.json")
        assert read_json(folder / "tracking.json")["mlflow"]["run_id"] == child.info.run_id
        assert child.info.status == "FINISHED" and child.info.run_name == f"{job}: data.max_length={max_length}"
        assert child.data.params["data.max_length"] == str(max_length)
        assert child.data.params["model.hidden_dim"] == "16" and child.data.params["backbone.source"] == "tiny"
        assert history(c, child.info.run_id, "val/accuracy") == [
            (h["opt_steps"], h["val/accuracy"]) for h in metrics["history"]
        ]
        assert len(metrics["history"]) == 2
        assert [s for s, _ in history(c, child.info.run_id, "train/loss_step")] == [
            r["opt_steps"] for r in step_rows(folder)
        ]
        for key in ("test/accuracy", "test/macro_f1", "test/loss"):  # one-point results: flat names, after the curves
            assert child.data.metrics[key.replace("/", "_")] == pytest.approx(metrics["test"][key])
        flat = [k for k in child.data.metrics if "/" not in k]  # MLflow's last chart section
        assert "test_accuracy" in flat and all(len(history(c, child.info.run_id, k)) == 1 for k in flat)
        assert len(history(c, child.info.run_id, "train/epoch_seconds")) == 2  # curves: in sections by prefix
        tags = child.data.tags
        assert tags["backbone.sha256"] == metrics["backbone"]["sha256"]
        assert tags["data.raw_fingerprint"] == metrics["data"]["raw_fingerprint"]
        assert (tags["precision"], tags["device"], tags["world_size"]) == ("fp32", "cpu", "1")
        assert tags["git.commit"] == (metrics["provenance"]["git"] or {}).get("commit", "unknown")
        assert {
            "metrics.json",
            "freeze_proof.json",
            "evaluation/test/confusion_matrix.png",
            "evaluation/test/report.json",
            "train.log",
            "hydra/config.yaml",
            "data_report.json",
            "data_report.md",
            "data_report.png",
        } <= artifacts(c, child.info.run_id)
        assert tags["data.leakage"] == "0" and tags["data.split"] == "stratified"
        calibration = metrics["calibration"]  # calibrated scores reach the tracker too
        assert child.data.metrics["calibration_temperature"] == pytest.approx(calibration["temperature"])
        assert child.data.metrics["test_ece"] == pytest.approx(calibration["ece_after"])
    # the copies are no run folders: finetune-compare over all of outputs/ finds the 2 jobs only
    assert sorted(p.name for p in find_job_folders([project / "outputs"])) == ["0", "1"]

    failed, failure = children["0"], read_json(sweep / "0" / "failed.json")
    assert "exceeds" in failure["error"] and failed.info.status == "FAILED"
    assert failed.data.tags["error"] == failure["error"] and failed.data.params["data.max_length"] == "1024"


def test_a_diverged_run_is_failed_with_its_one_line_error(run, project):
    with pytest.raises(Diverged):
        run("bad", "training.learning_rate=1e6")
    [tracked] = all_runs(project)
    failure = read_json(project / "runs" / "bad" / "failed.json")
    assert failure["status"] == "diverged" and tracked.info.status == "FAILED"
    assert tracked.data.tags["error"] == failure["error"] and "train.log" in artifacts(
        client(project), tracked.info.run_id
    )
    assert read_json(project / "runs" / "bad" / "tracking.json")["mlflow"]["status"] == "diverged"
    # a name that says what differs from other runs, the data as a dataset input, the source
    assert tracked.info.run_name.split(" · ")[1:] == ["raw", "frozen", "bad"], tracked.info.run_name
    [dataset] = client(project).get_run(tracked.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "raw" and json.loads(dataset.dataset.profile)["train"] > 0
    assert tracked.data.tags["mlflow.source.name"] == "train.py" and "run_folder" in tracked.data.tags


def test_a_run_that_fails_before_its_model_is_built_opens_no_tracker_run(run, project):
    from finetune_pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="no model weights"):
        run("nothing", "backbone=local", f"backbone.path={project / 'no-such-encoder'}")
    assert not (project / "outputs" / "mlflow.db").exists() or all_runs(project) == []


def test_tensorboard_event_files_hold_the_runs_scalars_and_hparams(run, project):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run("tb", "logger=tensorboard", "training.epochs=3")
    folder = project / "runs" / "tb"
    events = EventAccumulator(str(folder / "tensorboard")).Reload()
    metrics = read_json(folder / "metrics.json")
    val = events.Scalars("val/macro_f1")
    assert [e.step for e in val] == [h["opt_steps"] for h in metrics["history"]]
    assert [e.value for e in val] == pytest.approx([h["val/macro_f1"] for h in metrics["history"]])  # float32
    assert [e.step for e in events.Scalars("train/loss_step")] == [r["opt_steps"] for r in step_rows(folder)]
    assert [e.value for e in events.Scalars("lr/head")] == pytest.approx([r["lr"]["head"] for r in step_rows(folder)])
    assert events.Scalars("test_accuracy")[-1].value == pytest.approx(metrics["test"]["test/accuracy"])
    hparams = events.PluginTagToContent("hparams")  # the HParams tab: the config beside the results
    assert "_hparams_/session_start_info" in hparams and b"model.hidden_dim" in hparams["_hparams_/session_start_info"]
    assert b"test_accuracy" in hparams["_hparams_/experiment"] and b"best_val_" in hparams["_hparams_/experiment"]
    assert not (project / "outputs" / "mlflow.db").exists()  # logger=tensorboard alone: no MLflow store


def test_a_resumed_run_continues_its_tracked_run_without_logging_a_step_twice(run, project):
    args = (
        "logger=[mlflow,tensorboard]",
        "training.epochs=3",
        "training.log_every_steps=1",
        "training.save_every_steps=4",
    )
    with pytest.raises(Interrupted):  # SIGINT: the state is saved at the step it stops
        run("split", *args, stop_at=("epoch=1 step=5/", "SIGINT"))
    [stopped] = all_runs(project)
    assert stopped.info.status == "KILLED"
    with pytest.raises(Killed):  # kill -9 after batch 9 of epoch 2 was logged; the last save was after batch 8
        run("split", *args, resume=True, stop_at=("epoch=2 step=10/", "kill -9"))
    run("split", *args, resume=True)
    [resumed] = all_runs(project)
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    folder = project / "runs" / "split"
    c = client(project)
    logged = [s for s, _ in history(c, resumed.info.run_id, "train/loss_step")]
    every_step = sorted({r["opt_steps"] for r in step_rows(folder)})
    assert len(step_rows(folder)) == len(every_step) + 1  # metrics.jsonl holds the redone step 25 twice
    assert logged == every_step == list(range(1, 49))  # the tracker: each step once, none missing
    assert [s for s, _ in history(c, resumed.info.run_id, "val/accuracy")] == [
        h["opt_steps"] for h in read_json(folder / "metrics.json")["history"]
    ]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [e.step for e in EventAccumulator(str(folder / "tensorboard")).Reload().Scalars("train/loss_step")]
    assert sorted(steps) == every_step


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("failure", ["unreachable server", "locked store"])
def test_a_tracker_that_fails_never_stops_training(run, project, failure):
    db = project / "outputs" / "mlflow.db"
    if failure == "unreachable server":
        uri, lock = f"http://127.0.0.1:{closed_port()}", None
    else:
        client(project).search_experiments()  # the store exists...
        lock = sqlite3.connect(db, timeout=1)
        lock.execute("BEGIN EXCLUSIVE")  # ...and another process holds it
        uri = f"'sqlite:///{db}?timeout=1'"
    try:
        run("r", "logger=[mlflow,tensorboard]", f"logger.mlflow.tracking_uri={uri}", "logger.mlflow.http_retries=0")
    finally:
        if lock is not None:
            lock.rollback()
    folder = project / "runs" / "r"
    warnings = [line for line in (folder / "train.log").read_text().splitlines() if "logger mlflow" in line]
    assert len(warnings) == 1 and "[WARNING] logger mlflow: " in warnings[0] and "training goes on" in warnings[0]
    assert "database is locked" in warnings[0] if lock else "Connection refused" in warnings[0]
    record = read_json(folder / "tracking.json")
    assert record["mlflow"]["error"] in warnings[0] and record["tensorboard"]["status"] == "finished"
    for artifact in (
        "metrics.json",
        "best_model.pt",
        "final_model.pt",
        "freeze_proof.json",
        "evaluation/test/report.json",
    ):
        assert (folder / artifact).is_file(), artifact
    assert not (folder / "failed.json").exists()


WRITER = """
import json, sys
from pathlib import Path
from finetune_pipeline.config.schema import LoggerConfig, MlflowConfig
from finetune_pipeline.tracking.trackers import RunLabels, Trackers

folder, uri = Path(sys.argv[1]), sys.argv[2]
folder.mkdir(parents=True)
cfg = LoggerConfig(mlflow=MlflowConfig(tracking_uri=uri, experiment_name="finetune-pipeline", run_name=None, tags={},
                                       artifact_location=None, log_checkpoints=False, http_timeout_seconds=10,
                                       http_retries=0))
trackers = Trackers(folder, cfg)
trackers.start(RunLabels(folder.name), resume=False)
trackers.log_params({"job": folder.name})
for step in range(1, 41):
    trackers.log_row({"kind": "step", "epoch": 1, "step": step, "opt_steps": step, "loss": 1.0 / step,
                      "lr": {"head": 1e-3}, "texts_per_second": 100.0})
(folder / "metrics.json").write_text("{}")
trackers.log_artifacts(["metrics.json"])
trackers.finish("finished")
"""


def test_two_processes_at_once_share_one_new_sqlite_store(tmp_path):
    """Parallel jobs (joblib, two train.py) against one store that does not exist yet: both create it,
    both write every step (the full joblib sweep: test_joblib_jobs_in_parallel_share_one_store, slow)."""
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / name), uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for name in ("job-a", "job-b")
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("logger mlflow" in out for out in outputs), outputs
    c = mlflow.MlflowClient(tracking_uri=uri)
    runs = c.search_runs([c.get_experiment_by_name("finetune-pipeline").experiment_id])
    assert sorted(r.data.params["job"] for r in runs) == ["job-a", "job-b"]
    assert (tmp_path / "outputs" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()  # beside the store
    for r in runs:
        assert r.info.status == "FINISHED" and artifacts(c, r.info.run_id) == {"metrics.json"}
        assert [s for s, _ in history(c, r.info.run_id, "train/loss_step")] == list(range(1, 41))


@pytest.mark.slow  # ~30 s: Hydra's joblib plugin spawning worker processes
def test_joblib_jobs_in_parallel_share_one_store(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    run_train(
        project,
        "-m",
        "logger=mlflow",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.hidden_dim=8,16",
        "training.epochs=2",
        "data.max_length=32",
        "training.log_every_steps=1",
        tiny_cache=tiny_cache,
    )
    runs = all_runs(project)
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and sorted(r.data.params["model.hidden_dim"] for r in children) == [
        "16",
        "8",
    ]
    c = client(project)
    for r in children:  # every logged step arrived, none twice
        assert r.info.status == "FINISHED"
        rows = step_rows(Path(r.data.tags["run_folder"]))
        assert [s for s, _ in history(c, r.info.run_id, "train/loss_step")] == [row["opt_steps"] for row in rows]


def test_importing_the_package_imports_no_optional_library_nor_torch():
    """(``python train.py logger=none`` imports none either: test_missing_mmbert_offline_says_how_to_get_it.)"""
    light = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import finetune_pipeline"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in light.stderr.splitlines() if "|" in line}
    optional = {
        "mlflow",
        "tensorboard",
        "wandb",
        "peft",
        "datasets",
        "pyarrow",
        "onnx",
        "onnxruntime",
        "fastapi",
        "torch",
    }
    assert "finetune_pipeline" in imported and not imported & optional


def test_wandb_runs_offline_in_the_run_folder(run, project, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run("wb", "logger=wandb")
    folder = project / "runs" / "wb"
    record = read_json(folder / "tracking.json")["wandb"]
    assert record["status"] == "finished"
    [offline] = list((folder / "wandb").glob(f"offline-run-*-{record['id']}"))
    for name in ("metrics.json", "freeze_proof.json", "evaluation/test/confusion_matrix.png", "train.log"):
        assert (offline / "files" / name).read_bytes() == (folder / name).read_bytes(), name
    log = (offline / f"run-{record['id']}.wandb").read_bytes()  # W&B's own record of the run, for `wandb sync`
    for key in (
        b"train/loss_step",
        b"lr/head",
        b"val/macro_f1",
        b"test_accuracy",
        b"model.hidden_dim",
        b"backbone.sha256",
    ):
        assert key in log, key


def test_the_logger_group_composes_and_refuses_bad_values():
    from hydra import compose, initialize_config_dir

    from finetune_pipeline.config.load import to_config
    from finetune_pipeline.errors import PipelineError
    from helpers import REPO

    def logger(*overrides):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return to_config(compose(config_name="config", overrides=list(overrides))).logger

    default = logger()  # the shipped default: MLflow in a SQLite file under outputs/
    assert default.mlflow.tracking_uri.startswith("sqlite:///") and default.mlflow.tracking_uri.endswith(
        "/outputs/mlflow.db"
    )
    assert default.tensorboard is None and default.wandb is None
    both = logger("logger=[mlflow,tensorboard]")
    assert both.mlflow is not None and both.tensorboard.log_dir == "tensorboard" and both.wandb is None
    none = logger("logger=none")
    assert (none.mlflow, none.tensorboard, none.wandb) == (None, None, None)
    for bad in ("../elsewhere", "/tmp/x", "evaluation", "a/b", ".hidden", ""):
        with pytest.raises(PipelineError, match=r"logger.tensorboard.log_dir"):
            logger("logger=tensorboard", f"logger.tensorboard.log_dir='{bad}'")
    with pytest.raises(PipelineError, match=r"logger.mlflow.http_retries must be >= 0"):
        logger("logger.mlflow.http_retries=-1")


def test_resume_and_rerun_sweeps_may_change_where_a_run_is_tracked(tmp_path):
    from finetune_pipeline.config.differences import config_differences
    from finetune_pipeline.config.load import stored_config
    from finetune_pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"drop the other overrides \['logger=tensorboard'\]"):
        stored_config(tmp_path, [f"resume={tmp_path}", "logger=tensorboard"])  # the choice stays the run's
    with pytest.raises(PipelineError, match="not a run folder"):  # logger.* keys pass the override check
        stored_config(tmp_path, [f"resume={tmp_path}", "logger.mlflow.experiment_name=other"])
    a = compose_config(["logger=mlflow"])
    b = compose_config(["logger=[mlflow,tensorboard]", "logger.mlflow.experiment_name=other"])
    assert config_differences(a, b) == []  # a sweep job keeps its results whatever it is tracked in
    assert config_differences(a, compose_config(["logger=mlflow", "model.hidden_dim=8"])) == [
        f"model.hidden_dim: {a.model.hidden_dim} -> 8"
    ]


@pytest.mark.slow  # ~40 s: two Optuna invocations
def test_optuna_trials_are_children_of_one_parent_across_invocations(project, tiny_cache):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    args = [
        "-m",
        "logger=mlflow",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "training.epochs=1",
        "data.max_length=32",
    ]
    run_train(project, *args, tiny_cache=tiny_cache)
    run_train(project, *args, tiny_cache=tiny_cache)  # the same command continues the study, and its parent
    runs = all_runs(project)
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4 and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" and "model.hidden_dim=" in r.info.run_name for r in children)
    assert {"training.learning_rate", "model.hidden_dim", "model.dropout"} <= set(children[0].data.params)


def test_a_tracker_that_fails_mid_run_has_its_run_closed_as_failed_at_the_end(tmp_path, caplog, monkeypatch):
    """Fast equivalent of the locked-store test below (slow: SQLite's busy wait)."""
    import finetune_pipeline.tracking.helper as helper
    from finetune_pipeline.config.schema import LoggerConfig, MlflowConfig
    from finetune_pipeline.tracking.trackers import RunLabels

    finished = []

    class Flaky:
        def __init__(self, cfg):
            self.store_locked = False

        def start(self, run_dir, labels, stored, parent):
            return {"run_id": "r1"}

        def log_metrics(self, metrics, step):
            if self.store_locked:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")

        def finish(self, status, message):
            finished.append((status, message))

    monkeypatch.setattr(helper, "tracker_class", lambda name: Flaky)
    cfg = LoggerConfig(
        mlflow=MlflowConfig(
            tracking_uri="sqlite:///x.db",
            experiment_name="e",
            run_name=None,
            tags={},
            artifact_location=None,
            log_checkpoints=False,
            http_timeout_seconds=10,
            http_retries=0,
        )
    )
    run = helper.RunTrackers(tmp_path, cfg)
    run.open(RunLabels("flaky"), resume=False)
    run.call("log_metrics", [{"a": 1.0}, 1])
    run.live["mlflow"].store_locked = True
    run.call("log_metrics", [{"a": 2.0}, 2])
    run.call("log_metrics", [{"a": 3.0}, 3])  # dropped: not tried again, not warned again
    run.close("finished", None)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "database is locked" in warnings[0] and "closed as failed at the end" in warnings[0]
    assert finished == [
        ("failed", "tracking stopped mid-run: RuntimeError: (sqlite3.OperationalError) database is locked")
    ]
    assert read_json(tmp_path / "tracking.json")["mlflow"]["status"] == "failed"


@pytest.mark.slow
def test_a_store_locked_mid_run_is_one_warning_and_the_tracked_run_is_closed_when_it_returns(tmp_path, caplog):
    import sqlite3

    from finetune_pipeline.config.schema import LoggerConfig, MlflowConfig
    from finetune_pipeline.tracking.helper import RunTrackers
    from finetune_pipeline.tracking.trackers import RunLabels

    db = tmp_path / "outputs" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    folder = tmp_path / "run"
    folder.mkdir()
    cfg = LoggerConfig(
        mlflow=MlflowConfig(
            tracking_uri=uri,
            experiment_name="finetune-pipeline",
            run_name=None,
            tags={},
            artifact_location=None,
            log_checkpoints=False,
            http_timeout_seconds=10,
            http_retries=0,
        )
    )
    run = RunTrackers(folder, cfg)
    run.open(RunLabels("locked"), resume=False)
    run.call("log_metrics", [{"train/loss": 1.0}, 1])
    lock = sqlite3.connect(db, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # another program holds the store
    run.call("log_metrics", [{"train/loss": 0.5}, 2])
    lock.rollback()
    lock.close()  # ...and lets it go before the run ends
    run.close("finished", None)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "logger mlflow" in warnings[0] and "locked" in warnings[0]
    assert "Traceback" not in caplog.text
    record = read_json(folder / "tracking.json")["mlflow"]
    c = mlflow.MlflowClient(tracking_uri=uri)
    assert record["status"] == "failed" and "locked" in record["error"]
    assert c.get_run(record["run_id"]).info.status == "FAILED"  # not left RUNNING
