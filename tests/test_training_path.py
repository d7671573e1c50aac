"""Which training path runs is decided once from the keys; the adapter keys that moved say where to;
run folders stored by earlier versions still read; the records read back through their dataclasses."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from finetune_pipeline.artifacts.failure_record import FailureRecord
from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.config.differences import config_differences
from finetune_pipeline.config.load import stored_config, training_path
from finetune_pipeline.config.renamed import RENAMED, check_overrides
from finetune_pipeline.config.schema import TrainingPath
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.inference.manifest import ExportRecord
from helpers import REPO, compose_config

PATHS = [
    ([], TrainingPath.cached_features),
    (["training.cache_features=false"], TrainingPath.frozen_encoder),
    (["training.freeze_backbone=false"], TrainingPath.full),
    (["training.freeze_backbone=false", "training.cache_features=false"], TrainingPath.full),
    (["adapter=lora"], TrainingPath.lora),
    (["adapter=lora", "training.freeze_backbone=true"], TrainingPath.lora),  # the base stays frozen either way
    (["adapter=top_layers"], TrainingPath.top_layers),
    (
        ["adapter=top_layers", "training.freeze_backbone=false", "training.cache_features=false"],
        TrainingPath.top_layers,
    ),
]


@pytest.mark.parametrize("overrides,path", PATHS, ids=[" ".join(o) or "defaults" for o, _ in PATHS])
def test_one_path_from_the_keys(overrides, path):
    cfg = compose_config(["backbone=tiny", *overrides])
    assert training_path(cfg) == path
    assert path.head_only == (path in (TrainingPath.cached_features, TrainingPath.frozen_encoder))


def test_each_adapter_has_only_its_own_settings():
    lora, top = compose_config(["adapter=lora"]).adapter, compose_config(["adapter=top_layers"]).adapter
    assert (lora.lora.rank, lora.top_layers) == (8, None)
    assert (top.top_layers.layers, top.top_layers.cache_dtype, top.lora) == (2, "fp16", None)
    assert (compose_config([]).adapter.lora, compose_config([]).adapter.top_layers) == (None, None)


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_moved_key_names_its_new_place(old):
    with pytest.raises(PipelineError, match=rf"^{old} is now {RENAMED[old]}: use {RENAMED[old]}=4$"):
        check_overrides(["adapter=lora", f"{old}=4"])
    check_overrides(["adapter=lora", f"{RENAMED[old]}=4", "model.hidden_dim=8"])  # the new names pass


def test_train_py_refuses_an_old_key_in_one_line_before_composing(tmp_path, monkeypatch, caplog):
    from finetune_pipeline.cli.train import launch

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py", "adapter=lora", "adapter.rank=16"])
    with pytest.raises(SystemExit) as stop:
        launch(REPO)  # what train.py runs
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert stop.value.code == 1 and errors == ["adapter.rank is now adapter.lora.rank: use adapter.lora.rank=16"]
    assert not any(tmp_path.iterdir())  # no outputs/ folder made


@pytest.mark.parametrize("method", ["lora", "top_layers", "none"])
def test_a_run_folder_stored_with_the_flat_adapter_keys_still_reads(tmp_path, method):
    cfg = compose_config(["backbone=tiny", *([f"adapter={method}"] if method != "none" else [])])
    stored = _as_stored(cfg)
    stored["adapter"] = {
        "method": method,
        "rank": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": None,
        "layers": 2,
        "cache_dtype": "fp16",
    }  # as an earlier version stored it
    if method != "none":
        stored["training"]["freeze_backbone"] = False  # earlier versions required it with an adapter
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(stored))
    again = stored_config(tmp_path)
    assert training_path(again) == training_path(cfg)
    assert again.adapter == cfg.adapter
    assert [d for d in config_differences(again, cfg) if not d.startswith("training.freeze_backbone")] == []


def _as_stored(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def test_freeze_proof_status_is_read_back_and_derived_for_older_proofs(tmp_path):
    base = {
        "verdict": "PASS: encoder frozen, all tensors bit-identical",
        "freeze_backbone": True,
        "encoder_unchanged": True,
        "how": "x",
        "backbone_path": "b",
        "encoder_sha256_before": "1",
        "encoder_sha256_after": "1",
        "tensors_total": 1,
        "tensors_changed": [],
        "trainable_parameters": {"encoder": 0, "head": 5, "encoder_total": 10},
        "tensor_sha256_before": {"w": "1"},
        "tensor_sha256_after": {"w": "1"},
    }
    (tmp_path / "freeze_proof.json").write_text(json.dumps(base))  # written before `status` existed
    assert FreezeProof.read(tmp_path).status == "pass"
    (tmp_path / "freeze_proof.json").write_text(json.dumps({**base, "verdict": "NOT FROZEN: encoder fine-tuned"}))
    assert FreezeProof.read(tmp_path).status == "not_frozen"
    (tmp_path / "again").mkdir()
    FreezeProof.read(tmp_path).write(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "freeze_proof.json").read_text())["status"] == "not_frozen"
    (tmp_path / "freeze_proof.json").write_text(json.dumps({**base, "status": "fine"}))
    with pytest.raises(PipelineError, match=r"status 'fine' is not one of pass, fail, not_frozen"):
        FreezeProof.read(tmp_path)
    (tmp_path / "freeze_proof.json").write_text('{"verdict": 3}')
    with pytest.raises(PipelineError, match=r"freeze_proof\.json: not a readable freeze proof"):
        FreezeProof.read(tmp_path)


def test_failure_and_export_records_read_back(tmp_path):
    FailureRecord("diverged", "training diverged at epoch 1", "Diverged").write(tmp_path)
    assert FailureRecord.read(tmp_path) == FailureRecord("diverged", "training diverged at epoch 1", "Diverged")
    (tmp_path / "failed.json").write_text('{"error": "stopped by SIGTERM", "type": "Interrupted"}')  # older record
    assert FailureRecord.read(tmp_path).status == "stopped"
    (tmp_path / "failed.json").write_text("not json")
    assert FailureRecord.read(tmp_path).status == "failed"
    assert FailureRecord.read(tmp_path / "none") is None

    (tmp_path / "export.json").write_text(
        json.dumps(
            {
                "format": "onnx",
                "source": {
                    "run": "r",
                    "checkpoint": "best_model.pt",
                    "checkpoint_sha256": "a",
                    "checkpoint_stat": [1, 2],
                },
                "files": {"model.onnx": "b"},
                "opset": 18,
            }
        )
    )
    record = ExportRecord.read(tmp_path)
    assert (record.format, record.source.checkpoint, record.files, record.checks) == (
        "onnx",
        "best_model.pt",
        {"model.onnx": "b"},
        {"opset": 18},
    )
    (tmp_path / "export.json").write_text(json.dumps({"source": {"run": "r"}}))
    with pytest.raises(PipelineError, match=r"export\.json: its source entry is not an export's source"):
        ExportRecord.read(tmp_path)


def test_freeze_embeddings_keeps_the_token_matrix_and_trains_the_rest(in_project):
    """training.freeze_embeddings: the freeze proof (hashes of every encoder tensor before and after)
    shows the token embedding matrix unchanged, every other tensor trained, and fewer trainable weights."""
    overrides = ("training.freeze_backbone=false", "training.epochs=1")
    _, kept, log = in_project("kept", *overrides, "training.freeze_embeddings=true")
    _, trained, _ = in_project("trained", *overrides)
    proof = json.loads((kept / "freeze_proof.json").read_text())
    unchanged = [k for k in proof["tensor_sha256_before"] if k not in proof["tensors_changed"]]
    assert unchanged == ["embeddings.tok_embeddings.weight"] and "token embedding matrix stays as loaded" in log
    other = json.loads((trained / "freeze_proof.json").read_text())
    assert len(other["tensors_changed"]) == other["tensors_total"]  # without the option the matrix trains
    assert proof["trainable_parameters"]["encoder"] < other["trainable_parameters"]["encoder"]
