"""The one check of ``data.max_length`` against a backbone's positions (no model library needed)."""

from __future__ import annotations

from finetune_pipeline.errors import PipelineError


def check_max_length(max_length: int, positions: int | None, name: str) -> None:
    """From the config at start-up, and from the model's config.json once the folder is found."""
    if positions is not None and max_length > positions:
        raise PipelineError(f"data.max_length={max_length} exceeds {name}'s max_position_embeddings={positions}")
