"""The linear layers' weights made ready for inference once, not on every forward pass.

Under autocast every ``nn.Linear`` weight is cast to the autocast dtype on every pass; storing it in
that dtype once gives bit-identical outputs without the copies (MiniLM bf16 on a 2-core CPU: random
groups of 32 +9-13% texts/s, of 4 +14-33%). On the CPU in bf16 the weight is also packed once into
oneDNN's blocked layout, which a plain bf16 ``linear`` redoes on every call (what PyTorch's own
inductor does when it freezes a model for CPU inference): again bit-identical, length-sorted texts
+12-28%, random groups of 16-32 +2-18% over unpacked bf16 weights, in three runs
(bench/bench_server_process.py). The packing ops are PyTorch's ``torch.ops.mkldnn`` ones; where a
build lacks them, the weights are only cast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from finetune_pipeline.runtime.precision import Precision

BATCH_HINT = 64  # rows oneDNN tunes the packed layout for; any number of rows works


def prepacking_available() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
    )


class PrepackedLinear(nn.Module):
    """``nn.Linear`` in bf16 with a packed weight: (..., in) -> (..., out) bf16, inference only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16).contiguous()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # autocast would cast the input to bf16 for an nn.Linear; this op is not on its list
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed_weight, self.bias, "none", [], "")


def prepare_for_inference(model: nn.Module, precision: Precision) -> nn.Module:
    """The model's ``nn.Linear`` layers, for a model only ever run under ``precision.autocast()``:
    packed (CPU, bf16, where available) or stored in the autocast dtype; fp32 models unchanged."""
    if precision.name == "fp32":
        return model
    pack = _packs(precision)
    for parent, name, child in _linear_layers(model):
        if pack:
            setattr(parent, name, PrepackedLinear(child))
        else:
            child.to(precision.dtype)
    return model


@contextmanager
def packed_for_a_pass(model: nn.Module, precision: Precision) -> Iterator[nn.Module]:
    """The model's ``nn.Linear`` layers packed (CPU, bf16, where available) inside the block and
    the very same layers back after it, for a model that is hashed, saved or trained afterwards (a
    frozen run's encoding pass, a validation or test pass between epochs); the packed copies add
    half the linear weights' fp32 size meanwhile. Outputs are autocast's, bit for bit. Elsewhere,
    and for a compiled model (a swapped layer would recompile it) or one with adapter layers (they
    read their linear layer's ``weight``), the block runs the model as it is."""
    packs = _packs(precision) and not any(_compiled(m) or _adapter(m) for m in model.modules())
    swapped = _linear_layers(model) if packs else []
    try:
        for parent, name, child in swapped:
            setattr(parent, name, PrepackedLinear(child))
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None or hasattr(module, "_orig_mod")


def _adapter(module: nn.Module) -> bool:
    return type(module).__module__.startswith("peft.")


def _packs(precision: Precision) -> bool:
    return precision.device_type == "cpu" and precision.name == "bf16" and prepacking_available()


def _linear_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in list(parent.named_children())
        if isinstance(child, nn.Linear)
    ]
