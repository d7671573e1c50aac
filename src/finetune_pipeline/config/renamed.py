"""Keys that moved: what a command line still typing the old name is told, and how a run folder
stored by an earlier version is read (its ``.hydra/config.yaml`` is migrated, never rewritten)."""

from __future__ import annotations

from finetune_pipeline.errors import PipelineError

# old key -> new key (the adapter's keys moved under its method in one step)
RENAMED = {
    "adapter.rank": "adapter.lora.rank",
    "adapter.alpha": "adapter.lora.alpha",
    "adapter.dropout": "adapter.lora.dropout",
    "adapter.target_modules": "adapter.lora.target_modules",
    "adapter.layers": "adapter.top_layers.layers",
    "adapter.cache_dtype": "adapter.top_layers.cache_dtype",
}


def check_overrides(overrides: list[str]) -> None:
    """One line for an override of a key that moved, before Hydra composes (its own error would only
    say that the key is unknown)."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and key in RENAMED:
            raise PipelineError(f"{key} is now {RENAMED[key]}: use {override.replace(key, RENAMED[key], 1)}")


# keys added since: the value that reads an earlier run's config as it ran (its explicit processed paths
# are kept, so processed_dir goes unused; leakage was only reported; no calibration was fitted; every
# label was one string; nothing was compiled, every step ran SDPA attention and trained the embeddings)
ADDED = {
    "data": {"processed_dir": "data/processed", "leakage": "warn", "label_separator": None, "task": "single_label"},
    "training": {
        "calibration": "none",
        "calibration_min_texts": 100,
        "log_every_seconds": 0,
        "compile": "false",
        "attention": "sdpa",
        "freeze_embeddings": False,
    },
}


def migrate_stored(stored: dict) -> dict:
    """A stored config (plain dict) with the old flat adapter keys moved to their new places and the
    keys added since filled in as the run ran."""
    for group, values in ADDED.items():
        if isinstance(stored.get(group), dict):
            stored = {**stored, group: {**values, **stored[group]}}
    adapter = stored.get("adapter")
    if not isinstance(adapter, dict) or not any(k in adapter for k in ("rank", "layers")):
        return stored
    method = adapter.get("method", "none")
    lora = {k: adapter[k] for k in ("rank", "alpha", "dropout", "target_modules") if k in adapter}
    top = {k: adapter[k] for k in ("layers", "cache_dtype") if k in adapter}
    new = {
        "method": method,
        "lora": lora if method == "lora" else None,
        "top_layers": top if method == "top_layers" else None,
    }
    return {**stored, "adapter": new}
