"""MLflow: one run per training run, a parent run per sweep with a child per job.

Uses ``MlflowClient`` with explicit run ids (no fluent "active run"), so sweep jobs in one process
and the sweep's parent never mix. The default store is SQLite (``outputs/mlflow.db``): creating it
and the experiment happens under a file lock, so parallel jobs never race the schema migration.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from finetune_pipeline.config.schema import MlflowConfig
from finetune_pipeline.tracking.trackers import RunLabels

STATUS = {"finished": "FINISHED", "failed": "FAILED", "diverged": "FAILED", "stopped": "KILLED"}
PARENT_TAG = "mlflow.parentRunId"
MAX_NAME = 250  # MLflow's limit on run names and tag keys
CLIENTS: dict = {}  # tracking URI -> MlflowClient, in the helper process
USER_ENVIRONMENT = {k for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES") if k in os.environ}


class MlflowTracker:
    def __init__(self, cfg: MlflowConfig):
        # an unreachable server must cost seconds once, not minutes of retries with back-off per call;
        # the user's own MLFLOW_HTTP_* environment wins
        for name, value in (
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", cfg.http_timeout_seconds),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", cfg.http_retries),
        ):
            if name not in USER_ENVIRONMENT:
                os.environ[name] = str(value)
        # "Creating initial MLflow database tables..."; and its own error reports (with tracebacks) of what it
        # then raises: the helper's guard says each failure once, in one line
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")  # `import mlflow` sets its logger's level from it
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag

        logging.getLogger("mlflow").setLevel(logging.CRITICAL)
        logging.getLogger("alembic").setLevel(logging.CRITICAL)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retries: our one warning says it

        self.cfg, self._metric, self._param, self._tag = cfg, Metric, Param, RunTag
        if cfg.tracking_uri not in CLIENTS:  # one per store and process: opening a SQLite store costs ~0.6 s
            with store_lock(cfg.tracking_uri):  # the client creates (migrates) a new SQLite store at once
                CLIENTS[cfg.tracking_uri] = MlflowClient(tracking_uri=cfg.tracking_uri)
        self.client = CLIENTS[cfg.tracking_uri]
        self.run_id = ""

    def start(self, run_dir: Path, labels: RunLabels, stored: dict, parent: dict) -> dict:
        if stored.get("run_id") and stored.get("tracking_uri") == shown_uri(self.cfg.tracking_uri):
            self.run_id = stored["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")  # resume= continues the same tracked run
            experiment_id = stored.get("experiment_id")
        else:
            with store_lock(self.cfg.tracking_uri):
                experiment_id = experiment(self.client, self.cfg)
            tags = {
                **self.cfg.tags,
                **labels.tags,
                "run_folder": str(run_dir),
                "mlflow.source.name": "train.py",  # the UI's Source column
                "mlflow.source.type": "LOCAL",
            }
            if parent.get("run_id") and parent.get("tracking_uri") == shown_uri(self.cfg.tracking_uri):
                tags[PARENT_TAG] = parent["run_id"]
            run = self.client.create_run(
                experiment_id,
                run_name=(self.cfg.run_name or labels.name)[:MAX_NAME],
                tags={k[:MAX_NAME]: str(v) for k, v in tags.items()},
            )
            self.run_id = run.info.run_id
        return {"run_id": self.run_id, "experiment_id": experiment_id, "tracking_uri": shown_uri(self.cfg.tracking_uri)}

    def log_params(self, params: dict[str, object]) -> None:
        values = [self._param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(values), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=values[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[self._tag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_dataset(self, name: str, source: str, digest: str, profile: dict[str, int]) -> None:
        """The UI's Dataset column: the source's name, location, fingerprint (its first 8 hex digits,
        as MLflow shows digests) and the split sizes."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name[:MAX_NAME],
            digest=digest[:8],
            source_type="local",
            source=json.dumps({"uri": source}),
            profile=json.dumps(profile),
        )
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])

    def log_artifacts(self, run_dir: Path, names: list[str]) -> None:
        for name in names:
            path = run_dir / name
            # .hydra/config.yaml -> hydra/config.yaml: a copy with a .hydra/ folder would pass for a run folder
            parent = "/".join(part.lstrip(".") for part in Path(name).parent.parts) or None
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path=parent)

    def finish(self, status: str, message: str | None) -> None:
        if message:
            self.client.set_tag(self.run_id, "error", message[:5000])
        self.client.set_terminated(self.run_id, STATUS[status])


TRACKER = MlflowTracker


def experiment(client, cfg: MlflowConfig) -> str:
    """The id of ``cfg.experiment_name``, created (with ``artifact_location``) when missing."""
    found = client.get_experiment_by_name(cfg.experiment_name)
    if found is not None:
        return found.experiment_id
    location = None  # a server's own default
    if is_local(cfg.tracking_uri):  # never MLflow's ./mlruns, which depends on the working directory
        folder = (
            Path(cfg.artifact_location)
            if cfg.artifact_location
            else local_store(cfg.tracking_uri).parent / "mlartifacts"
        )
        location = folder.resolve().as_uri()
    return client.create_experiment(cfg.experiment_name, artifact_location=location)


def open_parent(cfg: MlflowConfig, labels: RunLabels, sweep_dir: Path, stored: dict) -> dict:
    """The sweep's parent run: a new one, or (a later job, the same sweep folder run again) the one it had."""
    tracker = MlflowTracker(cfg)
    if stored.get("run_id") and stored.get("tracking_uri") == shown_uri(cfg.tracking_uri):
        if tracker.client.get_run(stored["run_id"]).info.status != "RUNNING":
            tracker.client.update_run(stored["run_id"], status="RUNNING")
        return stored
    return tracker.start(sweep_dir, labels, {}, {})


def close_parent(
    cfg: MlflowConfig,
    stored: dict,
    status: str,
    message: str | None,
    sweep_dir: Path,
    files: list[str],
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    tracker = MlflowTracker(cfg)
    tracker.run_id = stored["run_id"]
    if metrics:
        tracker.log_metrics(metrics, 0)
    if tags:
        tracker.set_tags(tags)
    tracker.log_artifacts(sweep_dir, [f for f in files if (sweep_dir / f).exists()])
    tracker.finish(status, message)


def is_local(uri: str) -> bool:
    return urlsplit(uri).scheme in ("sqlite", "file", "")


def store_lock(uri: str):
    """A file lock beside a SQLite store: two processes creating it at once would both migrate it."""
    if urlsplit(uri).scheme != "sqlite":
        return nullcontext()
    db = local_store(uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".lock", timeout=60)


def local_store(uri: str) -> Path:
    """The file of a sqlite:// URI, or the folder of a file:// (or plain path) one."""
    parts = urlsplit(uri)
    return Path(parts.path[1:] if parts.scheme == "sqlite" else parts.path)  # sqlite:////abs/x.db, sqlite:///rel/x.db


def shown_uri(uri: str) -> str:
    """The URI without a password (it goes into tracking.json and the log)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, parts.fragment))
