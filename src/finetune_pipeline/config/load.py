"""Turn a composed Hydra config into the typed ``Config`` and reject bad values early.

Checks here need nothing but the config; the backbone-dependent one (max_length against the
backbone's positions) runs in ``backbone.load`` before any weights are read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import re
import typing
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from finetune_pipeline.artifacts.names import CONFIG_DIR, EVALUATION_DIR, TOKENIZER_DIR
from finetune_pipeline.config.checks import (
    COMPILE_SETTINGS,
    check_device_name,
    check_max_length,
    check_precision_for_device,
)
from finetune_pipeline.config.differences import HOW_KEYS, is_how_key
from finetune_pipeline.config.renamed import migrate_stored
from finetune_pipeline.config.schema import (
    AdapterMethod,
    BackboneSource,
    Config,
    LoggerConfig,
    TinyBackboneConfig,
    TrainingPath,
)
from finetune_pipeline.errors import ConfigError, PipelineError
from finetune_pipeline.paths import conf_dir, project_root, resolve_path

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RUN_FOLDER_NAMES = (TOKENIZER_DIR, EVALUATION_DIR, "wandb")  # folders a run writes itself
TINY_MIN_VOCAB = 64  # the tokenizer trainer needs room for special tokens and an alphabet


def register_resolvers(started: dt.datetime) -> None:
    """Pure resolvers (no files made, no environment read):
    ``${project_root:}``: output folders under the project whatever the cwd;
    ``${run_dir:resume,new}``: ``hydra.run.dir``, the resumed folder or a new one;
    ``${run_time:pattern}``: ``started`` formatted, the run's start time (rank 0's under torchrun)."""
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()), replace=True)
    OmegaConf.register_new_resolver("run_dir", _run_dir, replace=True)
    OmegaConf.register_new_resolver("run_time", started.strftime, replace=True)


def _run_dir(resume: str | None, new_dir: str) -> str:
    """``hydra.run.dir``: a new folder, or with ``resume=<folder>`` that folder."""
    return str(Path(resume).resolve()) if resume else new_dir


def to_config(cfg: DictConfig) -> Config:
    """The typed config object, after validation; hydra's own ``hydra`` node is left out."""
    _refuse_unknown_keys(cfg, Config, "")
    try:
        typed = Config(**{key: _plain(cfg[key]) for key in Config.__dataclass_fields__})
    except MissingMandatoryValue as e:
        key = e.full_key or "a key"
        raise ConfigError(f"{key} has no value and needs one: add {key}=... to the command{_needs(key)}") from None
    validate(typed)
    return typed


def _needs(key: str) -> str:
    """Why a key is mandatory, where a config group leaves it unset on purpose."""
    return " (backbone=local reads the encoder from the folder backbone.path names)" if key == "backbone.path" else ""


def check_override_keys(overrides: list[str]) -> None:
    """Every key an override sets exists in the schema (Hydra's own message for an unknown key is six
    lines that suggest adding it with ``+``, which the schema then refuses): one line with the
    closest key. ``hydra.*``, deletions and unparsable overrides are left to Hydra."""
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}  # experiment, hparams_search: groups, not keys
    for override in overrides:
        if override.startswith(("-", "~", "hydra.", "hydra/", "+hydra")) or "=" not in override:
            continue
        path = override.split("=", 1)[0].lstrip("+").split("@")[0]
        if path in groups and path not in Config.__dataclass_fields__:
            continue
        schema: type | None = Config
        for depth, part in enumerate(path.split(".")):
            fields = typing.get_type_hints(schema)
            if part not in fields:
                prefix = ".".join(path.split(".")[:depth])
                close = difflib.get_close_matches(part, list(fields), n=1)
                named = f"{prefix}.{close[0]}" if prefix and close else (close[0] if close else "")
                raise ConfigError(
                    f"{path} is not a config key{f' (did you mean {named}?)' if named else ''}; keys of "
                    f"{prefix or 'the config'}: {', '.join(fields)}"
                )
            parent, schema = schema, _dataclass_of(fields[part])
            if schema is None:  # a value, a dict or a list: its own keys are free
                if depth == len(path.split(".")) - 1:
                    _check_override_value(override, path, parent, part)
                break


def check_single_run(overrides: list[str], api: bool = False) -> None:
    """A sweep (``key=a,b``, ``range(...)``) given without ``-m``/``--multirun``: one line that says so
    (Hydra's message is four lines and exits 1). ``hydra.mode=MULTIRUN`` counts as ``-m``."""
    if any(a in ("-m", "--multirun") or a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in overrides):
        return
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue
        try:
            [parsed] = OverridesParser.create().parse_overrides([override])
        except Exception:  # Hydra says what is wrong with the syntax
            continue
        if parsed.is_sweep_override():
            value = override.split("=", 1)[1]
            how = "call train() once per value" if api else f"run it as a sweep with -m (python train.py -m {override})"
            listed = f", or write a list as [{value}]" if "," in value and "(" not in value else ""
            raise ConfigError(f"{override} sweeps several values: {how}{listed}")


def _check_override_value(override: str, path: str, parent: type, field: str) -> None:
    """The value of ``key=value`` against its field's type (an enum's names, a number, a bool), in one
    line before Hydra (whose merge error is six lines). Each value of a choice sweep (``a,b``) too."""
    from hydra.core.override_parser.types import ChoiceSweep

    try:
        [parsed] = OverridesParser.create().parse_overrides([override])
        value = parsed.value()
    except Exception:  # Hydra says what is wrong with the syntax
        return
    values = value.list if isinstance(value, ChoiceSweep) else [value] if not parsed.is_sweep_override() else []
    for one in values:
        if isinstance(one, str) and "${" in one:
            continue  # an interpolation: resolved later
        try:
            OmegaConf.merge(OmegaConf.structured(parent), {field: one})
        except MissingMandatoryValue:
            continue
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{path}={one}: {reason}") from None


def _refuse_unknown_keys(node: DictConfig, schema: type, prefix: str) -> None:
    """Keys added with ``+key=value`` that the schema does not have (Hydra lets ``+`` add them)."""
    fields = typing.get_type_hints(schema)
    for key in node:
        if prefix == "" and key == "hydra":
            continue
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"{name} is not a config key{hint}; keys of {prefix.rstrip('.') or 'the config'}: {', '.join(fields)}"
            )
        kind = _dataclass_of(fields[key])
        value = node._get_node(key)
        if kind is not None and OmegaConf.is_dict(value):
            _refuse_unknown_keys(value, kind, f"{name}.")


def _dataclass_of(annotation) -> type | None:
    """The dataclass in a field's type (``TinyBackboneConfig``, ``Optional[TinyBackboneConfig]``), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def stored_config(run_dir: Path, overrides: list[str] = ()) -> Config:
    """The config a run was started with (``<run>/.hydra/config.yaml``), for ``resume=<run>``.

    ``overrides``: the command line's; only how-keys (device, workers, logging) may change.
    """
    parsed = [o for o in OverridesParser.create().parse_overrides(list(overrides)) if o.key_or_group != "resume"]
    others = [o.input_line for o in parsed if not is_how_key(o.key_or_group) or o.is_delete()]
    if others:
        raise PipelineError(
            f"resume= continues {run_dir} with its stored config; drop the other overrides {others} "
            f"(allowed: {', '.join(HOW_KEYS)}, logger.<tracker>.<key>)"
        )
    path = run_dir / CONFIG_DIR / "config.yaml"
    if not path.is_file():
        raise PipelineError(f"{run_dir}: not a run folder (no .hydra/config.yaml to resume with)")
    try:
        record = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        stored = OmegaConf.merge(OmegaConf.structured(Config), migrate_stored(record))
        for o in parsed:
            OmegaConf.update(stored, o.key_or_group, o.value(), merge=False)
        stored.resume = None
    except Exception as e:  # broken YAML, a value of the wrong type, a key the schema lacks
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PipelineError(f"{path}: not a valid stored config ({reason})") from None
    return to_config(stored)


def _plain(node):
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def validate(cfg: Config) -> None:
    _refuse_non_finite(cfg, "")
    d, t, m, b = cfg.data, cfg.training, cfg.model, cfg.backbone
    _check(0 < d.train_ratio < 1, "data.train_ratio", f"must be in (0, 1), got {d.train_ratio}")
    _check(0 < d.val_ratio < 1, "data.val_ratio", f"must be in (0, 1), got {d.val_ratio}")
    _check(
        d.train_ratio + d.val_ratio < 1,
        "data.train_ratio + data.val_ratio",
        f"must be < 1 to leave a test split, got {d.train_ratio + d.val_ratio:g}",
    )
    _check(d.max_length >= 8, "data.max_length", f"must be >= 8, got {d.max_length}")
    _check(d.folds >= 2, "data.folds", f"must be >= 2 (k-fold needs two folds at least), got {d.folds}")
    _check(
        cfg.repeats is None or (len(cfg.repeats) >= 1 and len(set(cfg.repeats)) == len(cfg.repeats)),
        "repeats",
        f"must be null or a list of distinct data.seed values, e.g. repeats=[1,2,3], got {cfg.repeats}",
    )
    _check(0 <= d.fold < d.folds, "data.fold", f"must be in 0..data.folds-1 = 0..{d.folds - 1}, got {d.fold}")
    _check(
        d.long_text.value != "chunk" or 0 <= d.chunk_stride <= d.max_length // 2,
        "data.chunk_stride",
        f"must be in [0, data.max_length / 2 = {d.max_length // 2}] (windows must move on), got {d.chunk_stride}",
    )
    _check(
        bool(d.text_field.strip()) and bool(d.label_field.strip()),
        "data.text_field / data.label_field",
        "must name a key or column",
    )
    _check(
        d.text_field != d.label_field,
        "data.text_field / data.label_field",
        f"name the same field {d.text_field!r}; the text and the label are two fields",
    )
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(d, key)
        _check(value is None or value >= 1, f"data.{key}", f"must be >= 1, or null for all records, got {value}")
    _check(not d.hf.path or bool(str(d.hf.path).strip()), "data.hf.path", "must name a folder or a Hub id, or be null")
    _check(m.hidden_dim >= 1, "model.hidden_dim", f"must be >= 1, got {m.hidden_dim}")
    _check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    for key in ("epochs", "batch_size", "gradient_accumulation_steps", "log_every_steps", "encode_batch_size"):
        _check(getattr(t, key) >= 1, f"training.{key}", f"must be >= 1, got {getattr(t, key)}")
    _check(
        math.isfinite(t.log_every_seconds) and t.log_every_seconds >= 0,
        "training.log_every_seconds",
        f"must be >= 0 (0 = every step record), got {t.log_every_seconds}",
    )
    _check(
        t.calibration_min_texts >= 0,
        "training.calibration_min_texts",
        f"must be >= 0, got {t.calibration_min_texts}",
    )
    _check(
        t.encode_max_tokens >= 0,
        "training.encode_max_tokens",
        f"must be >= 0 (0 = no budget), got {t.encode_max_tokens}",
    )
    _check(
        t.early_stopping_patience >= 0,
        "training.early_stopping_patience",
        f"must be >= 0 (0 = off), got {t.early_stopping_patience}",
    )
    _check(
        t.save_every_steps >= 0,
        "training.save_every_steps",
        f"must be >= 0 (0 = epoch ends only), got {t.save_every_steps}",
    )
    _check(t.num_workers >= 0, "training.num_workers", f"must be >= 0, got {t.num_workers}")
    for key in ("learning_rate", "encoder_learning_rate"):
        _check(getattr(t, key) > 0, f"training.{key}", f"must be > 0, got {getattr(t, key)}")
    _check(0 <= t.label_smoothing < 1, "training.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    _check(t.weight_decay >= 0, "training.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _check(t.max_grad_norm >= 0, "training.max_grad_norm", f"must be >= 0 (0 = no clipping), got {t.max_grad_norm}")
    _check(0 <= t.warmup_ratio < 1, "training.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}")
    _check(
        str(t.compile).lower() in COMPILE_SETTINGS,
        "training.compile",
        f"must be auto, true or false, got {t.compile!r}",
    )
    check_device_name(t.device)
    if b.source == BackboneSource.tiny and b.tiny is None:
        raise PipelineError("backbone.tiny is required when backbone.source=tiny (use backbone=tiny)")
    if b.source == BackboneSource.tiny:
        _validate_tiny(b.tiny)
    check_max_length(d.max_length, b.tiny.max_position_embeddings if b.tiny else b.max_position_embeddings, b.name)
    _check_data_paths(d)
    check_precision_for_device(cfg.precision.mixed_precision.value, t.device)
    _validate_logger(cfg.logger)
    _validate_adapter(cfg)


def training_path(cfg: Config) -> TrainingPath:
    """The one decision of what trains: an adapter's method when one is chosen (then
    ``training.freeze_backbone`` and ``training.cache_features`` are not consulted), else the two keys."""
    if cfg.adapter.method == AdapterMethod.lora:
        return TrainingPath.lora
    if cfg.adapter.method == AdapterMethod.top_layers:
        return TrainingPath.top_layers
    if not cfg.training.freeze_backbone:
        return TrainingPath.full
    return TrainingPath.cached_features if cfg.training.cache_features else TrainingPath.frozen_encoder


def _validate_adapter(cfg: Config) -> None:
    a = cfg.adapter
    for method, node in ((AdapterMethod.lora, a.lora), (AdapterMethod.top_layers, a.top_layers)):
        if a.method == method and node is None:
            raise PipelineError(
                f"adapter.{method.value} is required when adapter.method={method.value} (use adapter={method.value})"
            )
    if a.method == AdapterMethod.lora:
        lora = a.lora
        _check(lora.rank >= 1, "adapter.lora.rank", f"must be >= 1, got {lora.rank}")
        _check(lora.alpha > 0, "adapter.lora.alpha", f"must be > 0, got {lora.alpha}")
        _check(0 <= lora.dropout < 1, "adapter.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
        _check(
            lora.target_modules is None
            or (len(lora.target_modules) > 0 and all(str(t).strip() for t in lora.target_modules)),
            "adapter.lora.target_modules",
            "must be null (the architecture's defaults) or a non-empty list of layer names",
        )
    if a.method == AdapterMethod.top_layers:
        top = a.top_layers
        _check(top.layers >= 1, "adapter.top_layers.layers", f"must be >= 1, got {top.layers}")
        _check(
            top.cache_dtype in ("fp16", "bf16", "fp32"),
            "adapter.top_layers.cache_dtype",
            f"must be fp16, bf16 or fp32, got {top.cache_dtype!r}",
        )
        _check(
            cfg.data.long_text.value != "chunk",
            "data.long_text",
            "=chunk is not supported with adapter=top_layers (it caches one row of token states per text); "
            "use adapter=lora or training.freeze_backbone=false",
        )


def _validate_logger(lg: LoggerConfig) -> None:
    if lg.mlflow is not None:
        _check(bool(lg.mlflow.tracking_uri.strip()), "logger.mlflow.tracking_uri", "must not be empty")
        _check(bool(lg.mlflow.experiment_name.strip()), "logger.mlflow.experiment_name", "must not be empty")
        _check(
            lg.mlflow.http_timeout_seconds >= 1,
            "logger.mlflow.http_timeout_seconds",
            f"must be >= 1, got {lg.mlflow.http_timeout_seconds}",
        )
        _check(lg.mlflow.http_retries >= 0, "logger.mlflow.http_retries", f"must be >= 0, got {lg.mlflow.http_retries}")
    if lg.tensorboard is not None:  # a folder inside the run folder, never one of its artifacts
        name = lg.tensorboard.log_dir
        _check(
            bool(PLAIN_NAME.fullmatch(name)) and name not in RUN_FOLDER_NAMES,
            "logger.tensorboard.log_dir",
            f"must be one plain folder name inside the run folder (letters, digits, '_', '-'), not {name!r}",
        )
    if lg.wandb is not None:
        _check(bool(lg.wandb.project.strip()), "logger.wandb.project", "must not be empty")


def _check_data_paths(d) -> None:
    """What preprocessing and the cache write must never land on the raw data, or on each other."""
    raw = resolve_path(d.raw_dir).resolve()
    written = {
        "data.processed_dir": resolve_path(d.processed_dir).resolve(),
        "data.cache_dir": resolve_path(d.cache_dir).resolve(),
        **{
            f"data.{key}": resolve_path(getattr(d, key)).resolve()
            for key in ("dataset_path", "label_mapping_path")
            if getattr(d, key)
        },
    }
    for key, path in written.items():
        if path == raw or raw in path.parents:
            raise PipelineError(
                f"{key}={path} lies inside data.raw_dir={raw}; preprocessing and the cache would "
                "write into the raw data (and read their own files back as raw parts)"
            )
    if "data.dataset_path" in written and written["data.dataset_path"] == written.get("data.label_mapping_path"):
        raise PipelineError(
            f"data.dataset_path and data.label_mapping_path are the same file ({written['data.dataset_path']})"
        )


def _validate_tiny(tiny: TinyBackboneConfig) -> None:
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
    ):
        _check(getattr(tiny, key) >= 1, f"backbone.tiny.{key}", f"must be >= 1, got {getattr(tiny, key)}")
    _check(
        tiny.vocab_size >= TINY_MIN_VOCAB,
        "backbone.tiny.vocab_size",
        f"must be >= {TINY_MIN_VOCAB} (5 special tokens and the byte-level alphabet), got {tiny.vocab_size}",
    )
    _check(
        tiny.hidden_size % tiny.num_attention_heads == 0,
        "backbone.tiny.hidden_size",
        f"={tiny.hidden_size} must be divisible by backbone.tiny.num_attention_heads={tiny.num_attention_heads}",
    )
    head_dim = tiny.hidden_size // tiny.num_attention_heads
    _check(
        head_dim % 2 == 0,
        "backbone.tiny.hidden_size / num_attention_heads",
        f"= {head_dim} must be even (rotary position embeddings rotate pairs of dimensions)",
    )
    _check(
        tiny.local_attention >= 2 and tiny.local_attention % 2 == 0,
        "backbone.tiny.local_attention",
        f"must be an even number >= 2 (a window of local_attention/2 tokens each side), got {tiny.local_attention}",
    )


def _refuse_non_finite(node, prefix: str) -> None:
    """NaN or ±inf in any numeric value (``training.learning_rate=inf`` would pass a ``> 0`` check)."""
    for key in node.__dataclass_fields__:
        value = getattr(node, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise PipelineError(f"{prefix}{key} must be a finite number, got {value}")
        if dataclasses.is_dataclass(value):
            _refuse_non_finite(value, f"{prefix}{key}.")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise PipelineError(f"{key} {message}")
