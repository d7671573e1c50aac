"""Which config values of two runs differ, and which keys may differ without changing a result.

A resumed run may change how it runs (device, workers, logging, trackers) but not what it
computes; a sweep job started again keeps its results only when nothing else differs.
"""

from __future__ import annotations

import dataclasses

# how a run goes, not what it computes: these may differ when a run is resumed or a sweep job re-run
HOW_KEYS = (
    "training.device",
    "training.num_workers",
    "training.progress_bar",
    "training.log_every_steps",
    "training.log_every_seconds",
    "training.save_every_steps",
)
HOW_GROUPS = ("logger.",)  # where a run is tracked changes none of its results


def is_how_key(key: str) -> bool:
    """A key a resumed run or a re-run sweep job may change: how it runs and reports, not what it computes."""
    return key in HOW_KEYS or key.startswith(HOW_GROUPS)


def config_differences(stored: object, new: object) -> list[str]:
    """``key: old -> new`` for every leaf of two typed configs that differs, how-keys aside."""
    old, cur = flatten(dataclasses.asdict(stored)), flatten(dataclasses.asdict(new))
    keys = sorted(k for k in set(old) | set(cur) if not is_how_key(k) and k != "resume")
    return [f"{k}: {_shown(old.get(k))} -> {_shown(cur.get(k))}" for k in keys if old.get(k) != cur.get(k)]


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; enums by their value."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = getattr(value, "value", value)  # enums by their value
    return out


def _shown(value: object) -> str:
    return "(absent)" if value is None else str(value)
