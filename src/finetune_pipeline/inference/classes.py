"""``id_to_label.json``: a run's or an export's classes, read and checked."""

from __future__ import annotations

import json
from pathlib import Path

from finetune_pipeline.errors import PipelineError


def read_classes(path: Path) -> list[dict[str, str]]:
    """``id_to_label.json``: class id -> {"symbol", "label"}, ids 0..N-1, validated."""
    try:
        id_to_label = json.loads(path.read_text(encoding="utf-8"))
        classes = [id_to_label[str(i)] for i in range(len(id_to_label))]
        if not classes or not all(
            isinstance(c, dict) and isinstance(c.get("symbol"), str) and isinstance(c.get("label"), str)
            for c in classes
        ):
            raise ValueError("not a map of class ids to {symbol, label}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PipelineError(f"{path}: unreadable class list ({type(e).__name__}: {e})") from None
    return classes
