"""LoRA adapters in a frozen encoder (``adapter=lora``), with peft.

``add_lora`` injects peft's LoRA layers into the encoder's linear layers (``inject_adapter_in_model``:
the encoder stays a plain transformers model, its base weights move under ``<layer>.base_layer``)
and freezes everything but the adapters. ``base_hashes`` names the base tensors as the encoder
named them before, so the freeze proof compares like with like; ``merge_lora`` folds the adapters
into the base weights for inference and export (W + alpha/r x B A) and removes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from finetune_pipeline.artifacts.freeze_proof import tensor_sha256
from finetune_pipeline.config.schema import LoraConfig
from finetune_pipeline.errors import PipelineError

DEFAULT_TARGETS = {  # config.model_type -> the linear layers LoRA adapts
    "modernbert": ["Wqkv", "Wo", "Wi"],  # attention qkv and output, MLP in and out (Wo names both outputs)
    **{
        kind: ["query", "key", "value", "dense"]
        for kind in ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert")
    },
}
ADAPTER_MARK = "lora_"  # every adapter tensor's name holds it


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    def as_dict(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSpec:
        return cls(int(d["rank"]), float(d["alpha"]), float(d["dropout"]), tuple(d["target_modules"]))


def lora_spec(lora_cfg: LoraConfig, encoder: nn.Module) -> LoraSpec:
    """The run's LoRA settings, with the default target modules of the encoder's architecture."""
    targets = lora_cfg.target_modules
    if not targets:
        kind = getattr(encoder.config, "model_type", "?")
        if kind not in DEFAULT_TARGETS:
            raise PipelineError(
                f"adapter=lora: no default target modules for a {kind!r} encoder; set "
                "adapter.lora.target_modules=[...] to the names of its linear layers"
            )
        targets = DEFAULT_TARGETS[kind]
    return LoraSpec(lora_cfg.rank, lora_cfg.alpha, lora_cfg.dropout, tuple(targets))


def add_lora(encoder: nn.Module, spec: LoraSpec) -> nn.Module:
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
    except ImportError:
        raise PipelineError("adapter=lora needs peft: pip install 'finetune-pipeline[lora]'") from None

    config = PeftLoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
    )
    try:
        encoder = inject_adapter_in_model(config, encoder)
    except ValueError as e:  # no module of those names
        raise PipelineError(
            f"adapter.lora.target_modules={list(spec.target_modules)}: {' '.join(str(e).split())[:300]}"
        ) from None
    for name, p in encoder.named_parameters():
        p.requires_grad_(ADAPTER_MARK in name)
    return encoder


def is_adapter(name: str) -> bool:
    return ADAPTER_MARK in name


def base_name(name: str) -> str:
    """``layers.0.attn.Wqkv.base_layer.weight`` -> ``layers.0.attn.Wqkv.weight``, as before injection."""
    return name.replace(".base_layer.", ".")


def base_hashes(encoder: nn.Module) -> dict[str, str]:
    """Hashes of the base tensors under their original names (adapters left out)."""
    return {base_name(n): tensor_sha256(t) for n, t in encoder.state_dict().items() if not is_adapter(n)}


def adapter_hashes(encoder: nn.Module) -> dict[str, str]:
    return {n: tensor_sha256(t) for n, t in encoder.state_dict().items() if is_adapter(n)}


def merge_lora(encoder: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layer back (inference, export)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(encoder.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = encoder.get_submodule(parent_name) if parent_name else encoder
            setattr(parent, child, module.get_base_layer())
    return encoder
