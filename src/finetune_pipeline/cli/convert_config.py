"""``finetune-pipeline convert-config train_config.json [--name NAME]``: the original pipeline's JSON
config as an experiment of this one, ``conf/experiment/NAME.yaml``, run with
``python train.py +experiment=NAME``.

Paths are resolved as the original did: absolute ones stay, relative ones are taken from the
original repository's root (the folder holding ``configs/``, or ``--original-root``), and are
written absolute. The original trained on its combined dataset; this pipeline rebuilds that from
the raw parts beside it (``<data>/raw``), into ``data/<NAME>/`` of this project, and keeps the
original's label symbols by copying its ``output_to_symbol.json`` there (once it is checked to be a
label mapping). Every key is either converted or listed as having no equivalent; nothing is dropped
silently.

Nothing is written until the experiment is known to load: the JSON may not repeat a key, hold NaN
or an infinite number or nest deeply; the experiment is built as data and written by a YAML
serialiser (comments escaped), read back and compared, composed with this project's conf/ and
validated by its schema, and its ``hydra.run.dir`` resolved. A value that fails is one line naming
the original key.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from finetune_pipeline.errors import PipelineError

SAME_KEYS = {  # original section.key -> our config key, value unchanged
    "data.max_length": "data.max_length",
    "data.train_ratio": "data.train_ratio",
    "data.val_ratio": "data.val_ratio",
    "data.seed": "data.seed",
    "model.hidden_dim": "model.hidden_dim",
    "model.dropout": "model.dropout",
    **{
        f"training.{key}": f"training.{key}"
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
            "log_every_steps",
        )
    },
}
PRECISIONS = {
    "fp16": "fp16",
    "bf16": "bf16",
    "fp32": "fp32",
    "no": "fp32",
    "none": "fp32",
    "off": "fp32",
    "false": "fp32",
    "": "fp32",
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class Conversion:
    overrides: dict[str, object] = field(default_factory=dict)  # our key -> value
    precision: str | None = None
    notes: list[str] = field(default_factory=list)  # how a key was converted, where it is not 1:1
    unmapped: list[str] = field(default_factory=list)  # keys without an equivalent, with the reason
    mapping_source: Path | None = None  # the original output_to_symbol.json, copied beside our dataset
    sources: dict[str, str] = field(default_factory=dict)  # our key -> the original key it came from

    def nested(self) -> dict:
        """The overrides as the experiment's YAML nests them."""
        nested: dict = {}
        for key, value in self.overrides.items():
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return nested


def convert(config_path: Path, name: str, original_root: Path | None = None) -> Conversion:
    original = _read(config_path)
    root = (original_root or _original_root(config_path)).resolve()
    result = Conversion()
    paths = original.pop("paths", {}) or {}
    _section(config_path, "paths", paths)
    for section in ("data", "model", "training"):
        values = original.pop(section, {}) or {}
        _section(config_path, section, values)
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted in SAME_KEYS:
                result.overrides[SAME_KEYS[dotted]] = value
                result.sources[SAME_KEYS[dotted]] = dotted
            elif dotted == "training.mixed_precision":
                _precision(result, value)
            else:
                result.unmapped.append(f"{dotted}={value!r}: no such setting here")
    if "training.log_every_steps" not in result.overrides:
        result.overrides["training.log_every_steps"] = 5  # the original's default when absent
        result.notes.append("training.log_every_steps absent: 5, the original's default")
    for key in original:
        result.unmapped.append(f"{key}: a top-level section this pipeline does not know")
    _paths(result, paths, root, name)
    return result


def write_experiment(
    conversion: Conversion, name: str, config_path: Path, conf_dir: Path, project: Path, overwrite: bool = False
) -> Path:
    """``conf_dir/experiment/NAME.yaml`` (and the copied label mapping); returns the YAML's path."""
    from finetune_pipeline.artifacts.atomic import atomic_path

    target = conf_dir / "experiment" / f"{name}.yaml"
    if target.exists() and not overwrite:
        raise PipelineError(f"{target}: exists; pass --overwrite to replace it, or --name another")
    copy = project / "data" / name / "output_to_symbol.json"
    if (
        conversion.mapping_source is not None
        and copy.exists()
        and copy.read_bytes() != conversion.mapping_source.read_bytes()
    ):
        raise PipelineError(
            f"{copy}: exists and differs from {conversion.mapping_source}; the symbols would "
            "change: remove it or pick another --name"
        )
    text = render(conversion, name, config_path)
    check_loads(conversion, text, config_path, conf_dir)  # nothing is written before the experiment is known to load
    target.parent.mkdir(parents=True, exist_ok=True)  # both folders first: a failure leaves no half of the pair
    if conversion.mapping_source is not None:
        copy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(copy) as tmp:
            shutil.copyfile(conversion.mapping_source, tmp)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def check_loads(conversion: Conversion, text: str, config_path: Path, conf_dir: Path) -> None:
    """The rendered experiment reads back as exactly the intended data, composes with this project's
    config, passes its schema and checks, and its run folder resolves; else one line."""
    import datetime as dt

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from finetune_pipeline.config.load import register_resolvers, to_config
    from finetune_pipeline.config.schema import register_configs

    expected = {
        **({"defaults": [{"override /precision": conversion.precision}]} if conversion.precision else {}),
        **conversion.nested(),
    }
    if yaml.safe_load(text) != expected:  # a key or note that escaped its place in the file
        raise PipelineError(f"{config_path}: the converted experiment does not read back as written; nothing written")
    register_configs()
    register_resolvers(dt.datetime.now())
    GlobalHydra.instance().clear()
    base = conf_dir if (conf_dir / "config.yaml").is_file() else Path(__file__).resolve().parents[3] / "conf"
    with initialize_config_dir(config_dir=str(base.resolve()), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=[f"precision={conversion.precision}"] if conversion.precision else []
        )
    GlobalHydra.instance().clear()
    for key, value in conversion.overrides.items():
        if key.startswith("hydra."):
            continue
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PipelineError(
                f"{config_path}: {conversion.sources.get(key, key)}={value!r}: cannot become {key} ({reason})"
            ) from None
    try:
        to_config(cfg)
    except PipelineError as e:
        raise PipelineError(f"{config_path}: the converted settings are not valid here: {e}") from None
    run_dir = conversion.overrides.get("hydra.run.dir")
    if run_dir is not None:
        try:
            OmegaConf.to_container(OmegaConf.create({"resume": None, "dir": run_dir}), resolve=True)
        except Exception as e:
            raise PipelineError(
                f"{config_path}: paths.output_dir: not usable as a run folder pattern "
                f"({str(e).strip().splitlines()[0]})"
            ) from None


def render(conversion: Conversion, name: str, config_path: Path) -> str:
    lines = [
        "# @package _global_",
        f"# Converted from {_comment(str(config_path.resolve()))} by `finetune-pipeline convert-config`.",
        f"# Run it: python train.py +experiment={name}   (any key can still be overridden after it)",
    ]
    lines += [f"# note: {_comment(note)}" for note in conversion.notes]
    lines += [f"# no equivalent: {_comment(item)}" for item in conversion.unmapped]
    data = {
        **({"defaults": [{"override /precision": conversion.precision}]} if conversion.precision else {}),
        **conversion.nested(),
    }
    return "\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _comment(text: str) -> str:
    """Text for one comment line: every character that could end the line (or hide) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise PipelineError(
            f"--name {name!r}: use letters, digits, _ . - (at most 64, no path separators); "
            "it names conf/experiment/NAME.yaml"
        )
    return name


def _read(path: Path) -> dict:
    try:
        config = json.loads(
            path.read_text(encoding="utf-8"),
            object_pairs_hook=_no_repeated_keys(path),
            parse_constant=_no_constant(path),
            parse_float=_finite(path),
        )
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path}: not valid UTF-8 (byte offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}: line {e.lineno} column {e.colno}: broken JSON: {e.msg}") from None
    except RecursionError:
        raise PipelineError(f"{path}: nested too deeply to be a train_config.json") from None
    if not isinstance(config, dict):
        raise PipelineError(f"{path}: expected a JSON object with paths, data, model and training")
    return config


def _no_repeated_keys(path: Path):
    def pairs(items: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in items]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise PipelineError(
                f"{path}: key {repeated[0]!r} appears {keys.count(repeated[0])} times in one object; "
                "which one was meant is a guess"
            )
        return dict(items)

    return pairs


def _no_constant(path: Path):
    def refuse(name: str):
        raise PipelineError(f"{path}: {name} is not a number a setting can have")

    return refuse


def _finite(path: Path):
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise PipelineError(f"{path}: {text} is too large to be a number a setting can have")
        return value

    return parse


def _section(path: Path, name: str, values: object) -> None:
    if not isinstance(values, dict):
        raise PipelineError(f"{path}: {name}: expected an object, got {type(values).__name__}")


MAX_MAPPING_BYTES = 16 << 20


def check_label_mapping(path: Path) -> None:
    """An ``output_to_symbol.json``: a JSON object of labels to distinct symbols (a, b, .., aa, ..)."""
    from finetune_pipeline.data.symbols import symbol_to_index

    try:
        if path.stat().st_size > MAX_MAPPING_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes")
        mapping = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError("not a JSON object of labels")
        for label, symbol in mapping.items():
            if not isinstance(symbol, str):
                raise ValueError(f"label {label!r}: symbol {symbol!r} is not a string")
            symbol_to_index(symbol)
        if len(set(mapping.values())) != len(mapping):
            raise ValueError("two labels share a symbol")
    except (OSError, ValueError, RecursionError) as e:
        raise PipelineError(
            f"paths.label_mapping_path: {path} is not a label mapping (output_to_symbol.json: labels "
            f"to symbols a, b, ..): {e}; nothing written"
        ) from None


def _original_root(config_path: Path) -> Path:
    """The original resolved relative paths from its repository root: the folder holding configs/."""
    folder = config_path.resolve().parent
    return folder.parent if folder.name == "configs" else folder


def _precision(result: Conversion, value: object) -> None:
    spelled = str(value).strip().lower() if value is not None else ""
    if spelled not in PRECISIONS:
        result.unmapped.append(f"training.mixed_precision={value!r}: not fp16, bf16 or off")
        return
    result.precision = PRECISIONS[spelled]
    if result.precision == "fp16":
        result.notes.append(
            "mixed_precision fp16: precision=fp16 needs CUDA (the original fell back to fp32 on a "
            "CPU); on a CPU run with precision=auto or precision=fp32"
        )


def _paths(result: Conversion, paths: dict, root: Path, name: str) -> None:
    def resolved(key: str) -> Path | None:
        value = paths.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            result.unmapped.append(f"paths.{key}={value!r}: not a path")
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (root / p).resolve()

    for key in sorted(set(paths) - {"base_model_dir", "dataset_path", "label_mapping_path", "output_dir"}):
        result.unmapped.append(f"paths.{key}={paths[key]!r}: no such path here")
    base = resolved("base_model_dir")
    if base is not None:
        result.overrides["backbone.path"] = str(base)
        if base.name.lower() != "mmbert-base":
            result.notes.append(
                f"backbone: {base.name} is checked against mmBERT-base's shape (hidden 768, 8192 "
                "positions), as the original did; for another encoder add backbone=local"
            )
    dataset = resolved("dataset_path")
    if dataset is not None:
        raw = dataset.parent.parent / "raw"
        result.overrides["data.raw_dir"] = str(raw)
        result.overrides["data.dataset_path"] = f"data/{name}/combined_dataset.json"
        result.notes.append(
            f"paths.dataset_path: the combined dataset is rebuilt from the raw parts beside it, "
            f"{raw}{'' if raw.is_dir() else ' (not there now: set data.raw_dir)'}, into data/{name}/"
        )
    mapping = resolved("label_mapping_path")
    if mapping is not None:
        result.overrides["data.label_mapping_path"] = f"data/{name}/output_to_symbol.json"
        if mapping.is_file():
            check_label_mapping(mapping)
            result.mapping_source = mapping
            result.notes.append(
                f"paths.label_mapping_path: {mapping} copied to data/{name}/, so every label keeps its symbol"
            )
        else:
            result.notes.append(f"paths.label_mapping_path: {mapping} does not exist; symbols are assigned afresh")
    output = resolved("output_dir")
    if output is not None and set(str(output)) & set("${}\\'\""):
        result.unmapped.append(
            f"paths.output_dir={paths['output_dir']!r}: characters a config value cannot hold "
            "($ { } quotes); runs go to outputs/"
        )
    elif output is not None:
        result.overrides["hydra.run.dir"] = (
            "${run_dir:${oc.select:resume,null}," + str(output) + "/${run_time:%Y-%m-%d}/${run_time:%H-%M-%S-%f}}"
        )
        result.notes.append(
            f"paths.output_dir: each run gets its own folder {output}/<date>/<time> (Hydra's run "
            "folder); sweeps still go to outputs/multirun/"
        )
