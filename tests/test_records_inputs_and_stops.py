"""Records stay trustworthy under misuse (3/3): the raw reader, corrupt run pieces, interruptions and
the temporary files they leave."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_pipeline.artifacts.atomic import remove_orphans, write_json
from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.data.preprocess import preprocess
from finetune_pipeline.errors import PipelineError
from helpers import REPO, compose_config, write_run_metrics

GOOD = [{"input": "Stocks rose", "output": "Economy"}, {"input": "Cup final tonight", "output": "Sport"}]


def data_config(tmp_path: Path):
    out = tmp_path / "processed"
    return compose_config(
        [
            f"data.raw_dir={tmp_path / 'raw'}",
            f"data.dataset_path={out / 'c.json'}",
            f"data.label_mapping_path={out / 'm.json'}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    ).data


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- 6. the raw reader never silently drops or mis-assigns data ------------------------------------


def test_extensions_are_case_insensitive_and_hidden_files_are_skipped_and_named(tmp_path, caplog):
    write_json(tmp_path / "raw" / "part-1.JSON", GOOD)
    (tmp_path / "raw" / "part-2.JsonL").write_text(json.dumps({"input": "Rates held", "output": "Economy"}) + "\n")
    (tmp_path / "raw" / "._part-1.json").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    write_json(tmp_path / "raw" / ".draft.json", [{"input": "hidden", "output": "Secret"}])
    (tmp_path / "raw" / "notes.md").write_text("not data")
    cfg = data_config(tmp_path)
    with caplog.at_level(logging.INFO):
        summary = preprocess(cfg)
    assert summary["records_read"] == 3 and set(summary["raw_files"]) == {"part-1.JSON", "part-2.JsonL"}
    assert "skipped 2 hidden file(s): ._part-1.json, .draft.json" in caplog.text and "notes.md" in caplog.text
    assert "Secret" not in json.loads(Path(cfg.label_mapping_path).read_text())


def test_labels_differing_only_in_surrounding_whitespace_are_one_class(tmp_path, caplog):
    write_json(
        tmp_path / "raw" / "a.json",
        [
            {"input": "a", "output": "sport"},
            {"input": "b", "output": "sport "},
            {"input": "c", "output": "\tsport"},
            {"input": "d", "output": "news"},
        ],
    )
    with caplog.at_level(logging.WARNING):
        preprocess(data_config(tmp_path))
    assert json.loads((tmp_path / "processed" / "m.json").read_text()) == {"news": "a", "sport": "b"}
    assert "2 label spelling(s) normalised" in caplog.text and "'sport ' -> 'sport'" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '[{"input": "bad \\ud800 text", "output": "x"}]',
            r"a.json: record 1: field \"input\" holds an invalid character "
            r"\(a lone surrogate \\ud800 at character 5\)",
        ),
        ('{"input": "ok", "output": "\\udfff"}\n', r"a.json: line 1: field \"output\" holds an invalid character"),
        (
            '{\n  "records": [],\n  "version": 2\n}\n',
            r"a.json: a JSON object with keys 'records', 'version', not records",
        ),
    ],
)
def test_bad_raw_content_is_one_accurate_line(tmp_path, content, message):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.json").write_text(content)
    with pytest.raises(PipelineError, match=message) as err:
        preprocess(data_config(tmp_path))
    assert "\n" not in str(err.value) and not (tmp_path / "processed").exists()


def test_raw_folder_problems_are_named_accurately(tmp_path, monkeypatch):
    (tmp_path / "raw").write_text("a file")
    with pytest.raises(PipelineError, match="raw: is a file, not a folder of raw parts"):
        preprocess(data_config(tmp_path))
    (tmp_path / "raw").unlink()
    write_json(tmp_path / "raw" / "a.json", GOOD)
    real = Path.read_bytes
    monkeypatch.setattr(
        Path,
        "read_bytes",
        lambda self: (
            (_ for _ in ()).throw(PermissionError(13, "Permission denied")) if self.name == "a.json" else real(self)
        ),
    )
    with pytest.raises(PipelineError, match=r"a.json: cannot read \(Permission denied\)$"):
        preprocess(data_config(tmp_path))


# -- 8. one line, not a traceback ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(module_project):
    """A finished fine-tuned tiny run (a full checkpoint) and the project it lives in."""
    project, train_run = module_project
    return project, train_run("done", "training.freeze_backbone=false")


@pytest.mark.parametrize(
    "piece, damage, message",
    [
        ("id_to_label.json", b"{not json", "id_to_label.json: unreadable class list"),
        ("id_to_label.json", b'{"0": "sport"}', "id_to_label.json: unreadable class list"),
        (
            "tokenizer/tokenizer.json",
            b"{broken",
            "tokenizer: differs from the tokenizer best_model.pt was trained with",
        ),
        ("best_model.pt", b"PK\x03\x04 truncated", "best_model.pt: not a readable checkpoint"),
        ("best_model.pt", None, "not a finished run folder (best_model.pt is missing)"),
        ("tokenizer", None, "not a finished run folder (tokenizer is missing)"),
    ],
)
def test_corrupt_or_missing_run_pieces_are_one_line(finished, tmp_path, caplog, piece, damage, message):
    import shutil

    _, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    target = copy / piece
    if damage is None:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    else:
        target.write_bytes(damage)
    (tmp_path / "t.txt").write_text("a text\n")
    assert main(["predict", str(copy), "--input", str(tmp_path / "t.txt"), "--precision", "fp32"]) == 1
    assert len(errors(caplog)) == 1 and message in errors(caplog)[0]


def test_a_corrupt_stored_config_or_state_is_one_line_on_resume(tmp_path):
    from finetune_pipeline.config.load import stored_config
    from finetune_pipeline.training.state import load_state

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match=r"config.yaml: not a valid stored config"):
        stored_config(tmp_path, ["++training.device=cpu"])
    (tmp_path / ".hydra" / "config.yaml").write_text("training:\n  epochs: many\n")
    with pytest.raises(PipelineError, match=r"config.yaml: not a valid stored config"):
        stored_config(tmp_path)
    (tmp_path / "train_state.pt").write_bytes(b"\x80\x04 not a state")
    with pytest.raises(PipelineError, match=r"train_state.pt: not a readable training state"):
        load_state(tmp_path / "train_state.pt")


def test_corrupt_cache_entries_and_hash_memos_are_rebuilt(in_project, project, caplog):
    _, first, _ = in_project("first")
    cache = project / "data" / "cache"
    [entry] = (cache / "features").glob("*.pt")
    entry.write_bytes(b"truncated")
    (cache / "backbone_sha256.json").write_text("{half")
    with caplog.at_level(logging.WARNING):
        _, second, log = in_project("second")
    assert "is corrupt" in caplog.text and "feature cache: miss" in log
    assert (
        json.loads((second / "metrics.json").read_text())["summary"]
        == json.loads((first / "metrics.json").read_text())["summary"]
    )
    assert json.loads((cache / "backbone_sha256.json").read_text())  # rebuilt, valid


def test_compare_flags_a_corrupt_job_and_still_prints_the_others(tmp_path, capsys):
    from finetune_pipeline.cli.compare import main as compare_main

    for name, best in (("0", 0.5), ("1", 0.7)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- model.hidden_dim={name}\n")
        write_run_metrics(tmp_path / name, best, best)
    (tmp_path / "1" / "metrics.json").write_text('{"best": ')
    assert compare_main([str(tmp_path), str(tmp_path / "0")]) == 0
    out = capsys.readouterr().out
    assert "corrupt: PipelineError" in out and "unreadable run record" in out
    assert "Best configuration by val/macro_f1 mean over 1 repeat(s): model.hidden_dim=0 " in out
    assert (
        len([line for line in out.splitlines() if line.startswith(("1 ", "2 "))]) == 2
    )  # job 0 given twice: listed once


def test_preprocess_help_prints_help(capsys):
    from finetune_pipeline.cli.preprocess import main as preprocess_main

    with pytest.raises(SystemExit) as exit_:
        preprocess_main(["--help"])
    assert exit_.value.code == 0 and "usage: finetune-preprocess" in capsys.readouterr().out


# -- 9. interruptions outside the training loop ----------------------------------------------------


def test_a_stop_while_encoding_keeps_nothing_half_written(in_project, project, monkeypatch):
    import finetune_pipeline.features.frozen as frozen
    from finetune_pipeline.runtime.signals import Stopped, raise_on_signals

    real_encode = frozen.encode

    def encode_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises here
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(frozen, "encode", encode_then_sigterm)
    with raise_on_signals(), pytest.raises(Stopped) as stop:
        in_project("stopped")
    assert stop.value.exit_code == 143
    run = project / "runs" / "stopped"
    assert json.loads((run / "failed.json").read_text())["status"] == "stopped"
    assert not list((project / "data" / "cache" / "features").glob("*.pt"))  # no entry of a partial pass
    assert not [p for p in project.rglob("*") if ".tmp-" in p.name]


def test_predict_stopped_by_a_signal_writes_nothing(finished, tmp_path, caplog, monkeypatch):
    from finetune_pipeline import Classifier

    _, run = finished
    (tmp_path / "t.txt").write_text("a\nb\n")
    monkeypatch.setattr(
        Classifier,
        "probabilities",
        lambda self, texts, progress=True: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)),
    )
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(run), "--input", str(tmp_path / "t.txt"), "--output", str(out)]) == 130
    assert errors(caplog) == ["stopped by SIGINT; nothing was written (outputs are replaced whole or not at all)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    dead = dead_pid()
    stale_file = tmp_path / f".metrics.json.tmp-{host}-{dead}-abc123"
    stale_dir = tmp_path / f".test.tmp-{host}-{dead}-xyz"
    live = tmp_path / f".other.json.tmp-{host}-{os.getpid()}-live"  # a write in progress
    foreign = tmp_path / f".x.json.tmp-otherhost-{dead}-abc"  # another machine's (shared disk)
    for path in (stale_file, live, foreign):
        path.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "report.json").write_text("{")
    write_json(tmp_path / "metrics.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", live.name, foreign.name])
    assert remove_orphans(tmp_path) == []


def test_a_run_removes_temporaries_left_by_kill_9_where_it_writes(in_project, project):
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    dead = dead_pid()
    from finetune_pipeline.data.source import processed_paths

    processed = processed_paths(compose_config([]).data).folder  # the shipped raw data's, in this project
    assert project in processed.parents
    processed.mkdir(parents=True)
    orphans = [
        processed / f".combined_dataset.json.tmp-{host}-{dead}-a1",
        project / "data" / "cache" / "features" / f".x.pt.tmp-{host}-{dead}-b2",
    ]
    for path in orphans:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    in_project("r")
    assert not [p for p in project.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_sigterm_at_any_point_of_a_command_line_run_is_one_line_and_cleans_up(project, tiny_cache):
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(project), "HF_HUB_OFFLINE": "1"}
    for wait_for in ("data:", "model:", "epoch 1/"):
        args = [
            sys.executable,
            str(REPO / "train.py"),
            "backbone=tiny",
            f"backbone.path={tiny_cache}",
            "training.progress_bar=false",
            "training.epochs=30",
            "training.freeze_backbone=false",
            "data.max_length=32",
        ]
        proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if wait_for in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stdout.readlines()
        proc.wait(timeout=120)
        text = "".join(lines)
        assert proc.returncode == 143 and "Traceback" not in text, text[-2000:]
        assert "stopped by SIGTERM" in text
        assert not [p for p in project.rglob("*") if ".tmp-" in p.name]


def test_python_train_py_prints_its_resolved_hydra_config():
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "hydra", "--resolve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run:" in proc.stdout and "/outputs/" in proc.stdout and "output_subdir: null" in proc.stdout


def test_a_damaged_combined_dataset_is_rebuilt_not_trusted(tmp_path, caplog):
    from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined

    write_json(tmp_path / "raw" / "a.json", GOOD)
    cfg = data_config(tmp_path)
    ensure_preprocessed(cfg)
    combined = Path(cfg.dataset_path)
    combined.write_text(combined.read_text()[:-20])  # truncated by a crash or an editor
    with caplog.at_level(logging.INFO):
        ensure_preprocessed(cfg)
    assert "c.json was changed or damaged after it was written" in caplog.text
    assert load_combined(cfg).texts == [r["input"] for r in GOOD]


def test_a_new_run_leaves_a_foreign_folder_untouched(in_project, project, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    from finetune_pipeline.errors import RunFolderRefused
    from finetune_pipeline.training.recipe import train

    with pytest.raises(RunFolderRefused, match="already holds earlier results"):
        train(compose_config(["backbone=tiny"]), foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # not even a lock file
