"""Weights & Biases: offline by default (``wandb sync`` uploads later); sweep jobs grouped by sweep."""

from __future__ import annotations

import os
from pathlib import Path

from finetune_pipeline.config.schema import WandbConfig
from finetune_pipeline.tracking.trackers import RunLabels


class WandbTracker:
    def __init__(self, cfg: WandbConfig):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.cfg, self._wandb = cfg, wandb
        self.run = None

    def start(self, run_dir: Path, labels: RunLabels, stored: dict, parent: dict) -> dict:
        wandb = self._wandb
        settings = wandb.Settings(console="off", x_disable_stats=True, silent=True)  # train.log has the console
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            mode=self.cfg.mode.value,
            dir=str(run_dir),
            id=stored.get("id"),
            resume="allow" if stored.get("id") else None,
            name=self.cfg.run_name or labels.name,
            group=parent.get("group"),
            tags=list(self.cfg.tags),
            reinit="create_new",
            settings=settings,
        )
        if labels.tags:
            self.run.config.update({f"sweep/{k}": v for k, v in labels.tags.items()}, allow_val_change=True)
        return {"id": self.run.id, "dir": str(run_dir / "wandb")}

    def log_params(self, params: dict[str, object]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.config.update({f"run/{k}": v for k, v in tags.items()}, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_artifacts(self, run_dir: Path, names: list[str]) -> None:
        for name in names:
            if name.startswith("."):
                continue  # .hydra/: W&B keeps the config as the run's config; a copy would pass for a run folder
            path = run_dir / name
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    self.run.save(str(file), base_path=str(run_dir), policy="now")

    def finish(self, status: str, message: str | None) -> None:
        self.run.summary["status"] = status
        if message:
            self.run.summary["error"] = message
        self.run.finish(exit_code=0 if status == "finished" else 1)


TRACKER = WandbTracker
