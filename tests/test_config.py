import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from finetune_pipeline.config.schema import BackboneSource, MixedPrecision, Pooling
from finetune_pipeline.errors import PipelineError
from helpers import REPO, compose_config


def test_default_config_has_every_seed_option():
    cfg = compose_config()
    assert cfg.backbone.source == BackboneSource.local and cfg.backbone.path == "base_models/mmBERT-base"
    assert cfg.backbone.hub_id == "jhu-clsp/mmBERT-base"
    assert (cfg.data.dataset_path, cfg.data.label_mapping_path) == (None, None)  # the source's own folder
    assert cfg.data.split.value == "auto" and cfg.data.leakage.value == "warn"
    assert cfg.training.log_every_steps == 5
    assert cfg.model.pooling == Pooling.mean and cfg.training.best_metric.value == "macro_f1"
    assert cfg.precision.mixed_precision == MixedPrecision.auto
    for key in ("max_length", "train_ratio", "val_ratio", "seed"):
        assert hasattr(cfg.data, key)
    for key in (
        "epochs",
        "batch_size",
        "gradient_accumulation_steps",
        "num_workers",
        "learning_rate",
        "encoder_learning_rate",
        "weight_decay",
        "max_grad_norm",
        "freeze_backbone",
        "warmup_ratio",
    ):
        assert hasattr(cfg.training, key)


def test_groups_compose():
    cfg = compose_config(["backbone=mmbert_small", "precision=fp32", "model.hidden_dim=256", "model.pooling=cls"])
    assert cfg.backbone.hidden_size == 384 and cfg.precision.mixed_precision == MixedPrecision.fp32
    assert cfg.model.hidden_dim == 256 and cfg.model.pooling == Pooling.cls
    assert compose_config(["backbone=tiny"]).backbone.tiny.hidden_size == 64


@pytest.mark.parametrize(
    "override",
    [
        "training.lerning_rate=1e-3",  # misspelled key
        "data.max_length=abc",  # wrong type
        "model.pooling=max",  # not an enum value
        "precision=fp8",  # no such group option
        "training.freeze_backbone=maybe",
    ],
)
def test_bad_overrides_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.train_ratio=1.2"], "data.train_ratio must be in (0, 1)"),
        (["data.val_ratio=0"], "data.val_ratio must be in (0, 1)"),
        (["data.train_ratio=0.8", "data.val_ratio=0.2"], "must be < 1 to leave a test split"),
        (["data.max_length=9000"], "exceeds mmBERT-base's max_position_embeddings=8192"),
        (["backbone=tiny", "data.max_length=1024"], "max_position_embeddings=512"),
        (["training.epochs=0"], "training.epochs must be >= 1"),
        (["model.dropout=1.0"], "model.dropout must be in [0, 1)"),
        (["training.device=tpu"], "training.device must be auto, cpu"),
        (["training.compile=sometimes"], "training.compile must be auto, true or false, got 'sometimes'"),
        (["precision=fp16", "training.device=cpu"], "fp16 needs CUDA"),
    ],
)
def test_invalid_values_fail_before_anything_loads(overrides, message):
    with pytest.raises(PipelineError) as err:
        compose_config(overrides)
    assert message in str(err.value)


def test_misspelled_override_fails_on_the_command_line(tmp_path):
    """A misspelled key: the project's one line with the closest key, exit 2 (a usage error), no run
    folder -- not Hydra's six lines suggesting ``+training.epoch=3``."""
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "training.epoch=3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "ERROR" in lines[0], lines
    assert "training.epoch is not a config key (did you mean training.epochs?)" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["+training.lerning_rate=1e-3"],
            "training.lerning_rate is not a config key (did you mean training.learning_rate?)",
        ),
        (["trainig.epochs=2"], "trainig.epochs is not a config key (did you mean training?)"),
        (["model.hidden=4"], "model.hidden is not a config key (did you mean model.hidden_dim?)"),
        (["backbone=local"], "backbone.path has no value and needs one: add backbone.path=... to the command"),
        (["training.attention=eager"], "training.attention=eager: Invalid value 'eager', expected one of [auto, sdpa]"),
        (["-m", "data.task=auto,maybe"], "data.task=maybe: Invalid value 'maybe', expected one of [auto, single_"),
        (["training.epochs=abc"], "training.epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (["training.freeze_backbone=perhaps"], "training.freeze_backbone=perhaps: Value 'perhaps' is not a valid bool"),
        (
            ["model.hidden_dim=16,32"],
            "model.hidden_dim=16,32 sweeps several values: run it as a sweep with -m (python train.py -m "
            "model.hidden_dim=16,32), or write a list as [16,32]",
        ),
    ],
)
def test_unknown_keys_bad_values_and_missing_values_are_one_line_usage_errors(overrides, message):
    from finetune_pipeline.config.load import check_override_keys, check_single_run
    from finetune_pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        check_override_keys(overrides)
        check_single_run(overrides)
        compose_config(overrides)
    assert message in str(error.value) and "\n" not in str(error.value) and error.value.exit_code == 2


def test_known_keys_groups_and_free_dicts_pass_the_key_check():
    from finetune_pipeline.config.load import check_override_keys, check_single_run

    check_override_keys(
        [
            "backbone=tiny",
            "+experiment=headlines_finetune",
            "hparams_search=optuna",
            "adapter.lora.rank=4",
            "logger.mlflow.tags={team: news}",
            "hydra.run.dir=x",
            "~logger",
            "repeats=[1,2]",
            "data.hf.splits.val=null",
            "training.attention=sdpa",
            "training.compile=true",
            "data.label_separator=null",
            "training.seed=null",
            "training.learning_rate=${training.encoder_learning_rate}",
            "data.raw_dir=${oc.env:HOME}/news",
        ]
    )
    check_single_run(["-m", "model.hidden_dim=16,32", "training.learning_rate=range(1,3)"])
    check_single_run(["hydra.mode=MULTIRUN", "model.hidden_dim=16,32"])


def test_invalid_value_exits_with_one_line_before_loading(tmp_path):
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "data.train_ratio=0.95", "data.val_ratio=0.1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "leave a test split" in errors[0]
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run folder
