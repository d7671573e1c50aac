"""``finetune-pipeline convert-config``: the original pipeline's train_config.json, every key, as
conf/experiment/NAME.yaml that train.py runs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.config.load import to_config
from helpers import REPO

ORIGINAL = {
    "paths": {
        "base_model_dir": "base_models/mmBERT-base",
        "dataset_path": "data/combined_processed/combined_dataset.json",
        "label_mapping_path": "data/combined_processed/output_to_symbol.json",
        "output_dir": "artifacts",
    },
    "data": {"max_length": 48, "train_ratio": 0.7, "val_ratio": 0.15, "seed": 7},
    "model": {"hidden_dim": 24, "dropout": 0.05},
    "training": {
        "epochs": 1,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "num_workers": 0,
        "learning_rate": 0.002,
        "encoder_learning_rate": 3e-5,
        "weight_decay": 0.02,
        "max_grad_norm": 0.5,
        "freeze_backbone": True,
        "mixed_precision": "bf16",
        "log_every_steps": 3,
        "warmup_steps": 10,
    },
    "wandb": {"project": "x"},
}


@pytest.fixture
def original(tmp_path):
    """An original repository: configs/train_config.json, data/raw, its combined mapping (symbols in an
    order of its own), a backbone folder."""
    root = tmp_path / "old_pipeline"
    shutil.copytree(REPO / "data" / "raw", root / "data" / "raw")
    labels = sorted(
        {
            r["output"]
            for p in (root / "data" / "raw").glob("*.json")
            for r in json.loads(p.read_text(encoding="utf-8"))
        },
        reverse=True,
    )
    mapping = {label: "abcdefghij"[i] for i, label in enumerate(labels)}
    (root / "data" / "combined_processed").mkdir(parents=True)
    (root / "data" / "combined_processed" / "output_to_symbol.json").write_text(json.dumps(mapping), encoding="utf-8")
    (root / "base_models" / "mmBERT-base").mkdir(parents=True)
    (root / "configs").mkdir()
    config = root / "configs" / "train_config.json"
    config.write_text(json.dumps(ORIGINAL), encoding="utf-8")
    return root, config, mapping


def test_every_original_key_is_converted_or_reported(original, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path / "project"))  # data/old/ goes there
    root, config, mapping = original
    conf = tmp_path / "conf_extra"
    assert pipeline_main(["convert-config", str(config), "--name", "old", "--conf-dir", str(conf)]) == 0
    text = (conf / "experiment" / "old.yaml").read_text()
    assert "# no equivalent: training.warmup_steps=10" in text and "# no equivalent: wandb" in text
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copytree(conf / "experiment", tmp_path / "conf" / "experiment", dirs_exist_ok=True)
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=["+experiment=old", "logger=none"]))
    assert (cfg.data.max_length, cfg.data.train_ratio, cfg.data.val_ratio, cfg.data.seed) == (48, 0.7, 0.15, 7)
    assert (cfg.model.hidden_dim, cfg.model.dropout) == (24, 0.05)
    t = cfg.training
    assert (
        t.epochs,
        t.batch_size,
        t.gradient_accumulation_steps,
        t.num_workers,
        t.learning_rate,
        t.encoder_learning_rate,
        t.weight_decay,
        t.max_grad_norm,
        t.freeze_backbone,
        t.log_every_steps,
    ) == (1, 8, 2, 0, 0.002, 3e-5, 0.02, 0.5, True, 3)
    assert cfg.precision.mixed_precision.value == "bf16"
    # paths resolved from the original repository's root, written absolute
    assert cfg.backbone.path == str(root / "base_models" / "mmBERT-base") and cfg.backbone.name == "mmBERT-base"
    assert cfg.data.raw_dir == str(root / "data" / "raw")
    assert cfg.data.dataset_path == "data/old/combined_dataset.json"
    assert json.loads((tmp_path / "project" / cfg.data.label_mapping_path).read_text()) == mapping
    # refused: an existing experiment, a name that is a path
    assert pipeline_main(["convert-config", str(config), "--name", "old", "--conf-dir", str(conf)]) == 1
    assert pipeline_main(["convert-config", str(config), "--name", "../x", "--conf-dir", str(conf)]) == 1
    assert not (tmp_path / "x.yaml").exists() and not (conf / "x.yaml").exists()
    # a --conf-dir that is a file: one line, exit 1, and no label mapping copied for a YAML never written
    (tmp_path / "a-file").write_text("")
    assert pipeline_main(["convert-config", str(config), "--name", "new", "--conf-dir", str(tmp_path / "a-file")]) == 1
    assert not (tmp_path / "project" / "data" / "new").exists()


@pytest.mark.parametrize(
    "content,message",
    [
        (b"{broken", "line 1 column 2: broken JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"training": [1]}', "training: expected an object"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_bad_original_configs_fail_in_one_line(tmp_path, caplog, monkeypatch, content, message):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    config = tmp_path / "train_config.json"
    config.write_bytes(content)
    assert pipeline_main(["convert-config", str(config), "--conf-dir", str(tmp_path / "conf")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and str(config) in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "conf").exists()


def test_the_converted_experiment_trains_and_keeps_the_original_symbols(original, tmp_path, tiny_cache, monkeypatch):
    """In-process: convert, compose with the experiment, train; the command-line version is slow."""
    from finetune_pipeline.training.recipe import train

    _root, config, mapping = original
    project = tmp_path / "project"
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    assert pipeline_main(["convert-config", str(config), "--name", "old", "--conf-dir", str(tmp_path / "conf")]) == 0
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        cfg = to_config(
            compose(
                config_name="config",
                overrides=[
                    "+experiment=old",
                    "backbone=tiny",
                    f"backbone.path={tiny_cache}",
                    "precision=fp32",
                    "logger=none",
                    "training.progress_bar=false",
                ],
            )
        )
    train(cfg, project / "runs" / "old")
    id_to_label = json.loads((project / "runs" / "old" / "id_to_label.json").read_text())
    assert {c["label"]: c["symbol"] for c in id_to_label.values()} == mapping  # the original symbols
    assert json.loads((project / "runs" / "old" / "metrics.json").read_text())["data"]["records"] == 320


@pytest.mark.slow
def test_the_converted_experiment_runs_and_keeps_the_original_symbols(original, tmp_path, tiny_cache):
    root, config, mapping = original
    project = tmp_path / "project"
    project.mkdir()
    conf = tmp_path / "conf_extra"
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_pipeline",
            "convert-config",
            str(config),
            "--name",
            "old",
            "--conf-dir",
            str(conf),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config-dir",
            str(conf),
            "+experiment=old",
            "backbone=tiny",
            f"backbone.path={tiny_cache}",
            "precision=fp32",
            "logger=none",
            "training.progress_bar=false",
        ],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.parent for p in (root / "artifacts").rglob("metrics.json"))
    assert len(runs) == 1  # the original's output_dir, one folder per run
    label_to_id = json.loads((runs[0] / "label_to_id.json").read_text())
    id_to_label = json.loads((runs[0] / "id_to_label.json").read_text())
    assert {c["label"]: c["symbol"] for c in id_to_label.values()} == mapping  # the original symbols
    assert set(label_to_id) == set(mapping.values())
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["data"]["records"] > 0 and (project / "data" / "old" / "combined_dataset.json").is_file()


def tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def hostile(config_path, change):
    data = json.loads(config_path.read_text())
    change(data)
    config_path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case, message",
    [
        ("repeated section", "key 'data' appears 2 times in one object"),
        ("NaN", "NaN is not a number a setting can have"),
        ("1e400", "1e400 is too large to be a number a setting can have"),
        ("wrong type", "training.epochs='many': cannot become training.epochs"),
        ("out of range", "the converted settings are not valid here: data.train_ratio must be in (0, 1), got 7"),
        ("comma in output_dir", "paths.output_dir: not usable as a run folder pattern"),
        ("deep nesting", "nested too deeply"),
        ("mapping is not a mapping", "/etc/passwd is not a label mapping"),
    ],
)
def test_hostile_originals_are_refused_in_one_line_and_nothing_is_written(
    original, tmp_path, caplog, monkeypatch, case, message
):
    project = tmp_path / "project"
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    _, config, _ = original
    text = config.read_text()
    if case == "repeated section":
        config.write_text(text[:-1] + ', "data": {"max_length": 64}}')
    elif case in ("NaN", "1e400"):
        config.write_text(text.replace('"dropout": 0.05', f'"dropout": {case}'))
    elif case == "wrong type":
        hostile(config, lambda d: d["training"].update(epochs="many"))
    elif case == "out of range":
        hostile(config, lambda d: d["data"].update(train_ratio=7))
    elif case == "comma in output_dir":
        hostile(config, lambda d: d["paths"].update(output_dir="runs,v2"))
    elif case == "deep nesting":
        config.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        hostile(config, lambda d: d["paths"].update(label_mapping_path="/etc/passwd"))
    conf = tmp_path / "conf_extra"
    before = tree(conf), tree(project)
    assert pipeline_main(["convert-config", str(config), "--name", "evil", "--conf-dir", str(conf)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert (tree(conf), tree(project)) == before


def test_keys_cannot_inject_yaml_and_comments_stay_comments(original, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path / "project"))
    _, config, _ = original
    evil = "epochs\nhydra:\n  run:\n    dir: /tmp/owned\u2028x"
    hostile(config, lambda d: d["training"].update({evil: 1}))
    conf = tmp_path / "conf_extra"
    assert pipeline_main(["convert-config", str(config), "--name", "inj", "--conf-dir", str(conf)]) == 0
    import yaml

    text = (conf / "experiment" / "inj.yaml").read_text()
    data = yaml.safe_load(text)
    assert "/tmp/owned" not in json.dumps(data) and "/tmp/owned" not in data["hydra"]["run"]["dir"]
    assert "epochs\\nhydra:\\n  run:" in text  # listed as unconverted, escaped on its comment line
    assert all(line.startswith("#") for line in text.split("\n")[: text.split("\n").index("defaults:")])
