"""``adapter=top_layers``: train only the encoder's top N layers, over cached states of the rest.

The bottom of the encoder (embeddings and its first L - N layers) is frozen, so its output, the
token states entering layer L - N, is computed once per text (``bottom_only``) and cached on disk;
every epoch then runs only the top N layers, the final norm and the head on those states
(``top_only``, which feeds them to the encoder's own forward in place of the embeddings, so masks,
rotary positions and the local/global attention pattern are the model's own). Both views swap
modules of the one encoder for the duration of a forward pass: parameter names, the optimizer and
DistributedDataParallel see the whole encoder throughout.
"""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from finetune_pipeline.errors import PipelineError


class _Passthrough(nn.Module):
    """Stands in for the embeddings: the cached states are the input."""

    def forward(self, input_ids=None, inputs_embeds=None, **_):
        return inputs_embeds


def layer_stack(encoder: nn.Module) -> tuple[nn.Module, str]:
    """(module, attribute) of the encoder's ModuleList of transformer layers (ModernBERT ``layers``,
    BERT-style ``encoder.layer``): the first ModuleList of ``num_hidden_layers`` modules."""
    count = getattr(encoder.config, "num_hidden_layers", None)
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name:
            owner_name, _, attr = name.rpartition(".")
            return (encoder.get_submodule(owner_name) if owner_name else encoder), attr
    raise PipelineError(f"adapter=top_layers: cannot find the layer stack of a {type(encoder).__name__}")


def top_parameter_prefixes(encoder: nn.Module, layers: int) -> list[str]:
    """State-dict prefixes of what trains: the top ``layers`` layers and a final norm after them."""
    owner, attr = layer_stack(encoder)
    stack = getattr(owner, attr)
    path = next(n for n, m in encoder.named_modules() if m is stack)
    prefixes = [f"{path}.{i}." for i in range(len(stack) - layers, len(stack))]
    if isinstance(getattr(encoder, "final_norm", None), nn.Module):
        prefixes.append("final_norm.")
    return prefixes


def freeze_all_but_top(encoder: nn.Module, layers: int) -> None:
    """Only the top ``layers`` layers (and a final norm) keep gradients."""
    prefixes = tuple(top_parameter_prefixes(encoder, layers))
    for name, p in encoder.named_parameters():
        p.requires_grad_(name.startswith(prefixes))


def check_layers(encoder: nn.Module, layers: int) -> int:
    total = len(getattr(*layer_stack(encoder)))
    if not 1 <= layers < total:
        raise PipelineError(
            f"adapter.top_layers.layers={layers}: the encoder has {total} layers; train 1 to {total - 1} of them "
            "(all of them is training.freeze_backbone=false)"
        )
    return total - layers  # the index of the first trained layer


@contextmanager
def bottom_only(encoder: nn.Module, first_top: int):
    """The encoder as its embeddings and first ``first_top`` layers (no final norm): its last hidden
    state is what enters layer ``first_top``."""
    owner, attr = layer_stack(encoder)
    stack = getattr(owner, attr)
    norm = getattr(encoder, "final_norm", None)
    setattr(owner, attr, nn.ModuleList(list(stack)[:first_top]))
    if isinstance(norm, nn.Module):
        encoder.final_norm = nn.Identity()
    try:
        yield encoder
    finally:
        setattr(owner, attr, stack)
        if isinstance(norm, nn.Module):
            encoder.final_norm = norm


@contextmanager
def top_only(encoder: nn.Module, first_top: int):
    """The encoder from layer ``first_top`` on: call it with ``inputs_embeds`` = the cached states."""
    owner, attr = layer_stack(encoder)
    stack, embeddings = getattr(owner, attr), encoder.embeddings
    setattr(owner, attr, nn.ModuleList(list(stack)[first_top:]))
    encoder.embeddings = _Passthrough()
    try:
        yield encoder
    finally:
        setattr(owner, attr, stack)
        encoder.embeddings = embeddings
