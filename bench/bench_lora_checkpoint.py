"""LoRA checkpoint and training-state sizes on a full-size encoder, against full fine-tuning's.

    python bench/bench_lora_checkpoint.py <backbones>/mmBERT-base [--rank 8]

Builds the random-init stand-in from the config (no weights needed), adds the default LoRA adapters
(model/adapters.py) and writes, into a temporary folder, what a run would write: a LoRA
``best_model.pt`` (head + adapters) and a full one (encoder + head), and counts the parameters a
training state holds (trainable tensors + two AdamW moments each). Results: printed as JSON and
written to bench/results/lora_checkpoint.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine

from finetune_pipeline.artifacts.checkpoints import BackboneIdentity, CheckpointIdentity, save_checkpoint
from finetune_pipeline.model.adapters import LoraSpec, add_lora, is_adapter
from finetune_pipeline.model.classifier import HeadConfig, TextClassifier
from finetune_pipeline.training.builders import adapter_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_dir", type=Path)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(args.config_dir))
    head = HeadConfig(encoder.config.hidden_size, 512, 16, "mean")
    classes = [{"symbol": chr(ord("a") + i), "label": f"class {i}"} for i in range(16)]
    identity = CheckpointIdentity(
        BackboneIdentity("stand-in", str(args.config_dir), "0" * 64), classes, "0" * 64, "fp32"
    )
    with tempfile.TemporaryDirectory() as tmp:
        full = TextClassifier(encoder, head, frozen=False)
        save_checkpoint(Path(tmp) / "full.pt", full.state_dict(), identity, dataclasses.asdict(head))
        full_bytes = (Path(tmp) / "full.pt").stat().st_size
        spec = LoraSpec(args.rank, 2.0 * args.rank, 0.05, ("Wqkv", "Wo", "Wi"))
        lora = TextClassifier(add_lora(encoder, spec), head, frozen=False)
        save_checkpoint(
            Path(tmp) / "lora.pt", adapter_weights(lora), identity, dataclasses.asdict(head), spec.as_dict()
        )
        lora_bytes = (Path(tmp) / "lora.pt").stat().st_size
    adapters = sum(p.numel() for n, p in lora.named_parameters() if is_adapter(n))
    head_params = sum(p.numel() for p in lora.head.parameters())
    base = sum(p.numel() for n, p in lora.encoder.named_parameters() if not is_adapter(n))
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "backbone": args.config_dir.name,
        "rank": args.rank,
        "target_modules": list(spec.target_modules),
        "encoder_parameters": base,
        "adapter_parameters": adapters,
        "head_parameters": head_params,
        "full_checkpoint_bytes": full_bytes,
        "lora_checkpoint_bytes": lora_bytes,
        "lora_vs_full_checkpoint": lora_bytes / full_bytes,
        # trainable tensors + AdamW's exp_avg and exp_avg_sq, fp32
        "full_training_state_bytes": 3 * 4 * (base + head_params),
        "lora_training_state_bytes": 3 * 4 * (adapters + head_params),
    }
    (REPO / "bench" / "results" / "lora_checkpoint.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
