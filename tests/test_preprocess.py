import json
import subprocess
import sys

import pytest

from finetune_pipeline.data.preprocess import META_NAME, load_combined, preprocess, stale_reason
from finetune_pipeline.errors import PipelineError
from helpers import REPO, compose_config, write_json

GOOD = [{"input": "Match won", "output": "Sport"}, {"input": "Rates rise", "output": "Economy"}]


@pytest.fixture
def cfg(tmp_path):
    out = tmp_path / "processed"
    return compose_config(
        [
            f"data.raw_dir={tmp_path / 'raw'}",
            f"data.dataset_path={out / 'combined_dataset.json'}",
            f"data.label_mapping_path={out / 'output_to_symbol.json'}",
        ]
    ).data


def outputs(tmp_path):
    folder = tmp_path / "processed"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_merges_json_array_and_json_lines_into_symbols(tmp_path, cfg):
    write_json(tmp_path / "raw" / "part-1.json", [*GOOD, GOOD[0]])  # one exact duplicate
    lines = [{"input": "Новый фильм вышел", "output": "Культура"}, {"input": "Match won", "output": "Economy"}]
    (tmp_path / "raw" / "part-2.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n", encoding="utf-8"
    )

    summary = preprocess(cfg)

    combined = json.loads((tmp_path / "processed" / "combined_dataset.json").read_text(encoding="utf-8"))
    mapping = json.loads((tmp_path / "processed" / "output_to_symbol.json").read_text(encoding="utf-8"))
    assert mapping == {"Economy": "a", "Sport": "b", "Культура": "c"}
    assert combined == [
        {"input": "Match won", "output": "b"},
        {"input": "Rates rise", "output": "a"},
        {"input": "Новый фильм вышел", "output": "c"},
        {"input": "Match won", "output": "a"},
    ]
    assert summary["duplicates_dropped"] == 1
    assert summary["texts_with_conflicting_labels"] == 1  # "Match won" under Sport and Economy
    assert summary["records_read"] == 5 and summary["records_written"] == 4


def test_conflicting_labels_are_reported(tmp_path, cfg, caplog):
    write_json(tmp_path / "raw" / "a.json", [*GOOD, {"input": "Match won", "output": "Economy"}])
    preprocess(cfg)
    assert "1 texts appear under more than one label" in caplog.text
    assert "Match won" in caplog.text


def test_symbols_stay_stable_when_new_labels_arrive(tmp_path, cfg):
    write_json(tmp_path / "raw" / "a.json", GOOD)
    preprocess(cfg)
    write_json(
        tmp_path / "raw" / "b.json", [{"input": "Art show", "output": "Arts"}, {"input": "Goal!", "output": "Sport"}]
    )
    preprocess(cfg)
    mapping = json.loads((tmp_path / "processed" / "output_to_symbol.json").read_text())
    # "Arts" sorts first but old labels keep their symbols; the new label is appended
    assert mapping == {"Economy": "a", "Sport": "b", "Arts": "c"}
    data = load_combined(cfg)
    assert data.symbols == ["b", "a", "c", "b"]


def test_staleness_follows_the_raw_files(tmp_path, cfg):
    write_json(tmp_path / "raw" / "a.json", GOOD)
    assert "missing" in stale_reason(cfg)
    preprocess(cfg)
    assert stale_reason(cfg) is None
    write_json(tmp_path / "raw" / "a.json", [*GOOD, {"input": "More", "output": "Sport"}])
    assert "changed" in stale_reason(cfg)
    assert (tmp_path / "processed" / META_NAME).is_file()


BAD_INPUTS = {
    "broken JSON": (b'[{"input": "a", "output": "b"},\n {"input": ', "line 2"),
    "broken JSON line": (b'{"input": "a", "output": "b"}\n{"input": "c" "output": "d"}\n', "line 2"),
    "missing field": (json.dumps([GOOD[0], {"input": "x"}]).encode(), 'record 2: missing field "output"'),
    "non-string field": (
        json.dumps([{"input": 5, "output": "b"}]).encode(),
        'record 1: field "input" must be a string',
    ),
    "non-string label": (
        json.dumps([{"input": "t", "output": {"b": 1}}]).encode(),
        'record 1: field "output" must be a string or a list of strings, got dict',
    ),
    "non-string label in a list": (
        json.dumps([{"input": "t", "output": ["b", 3]}]).encode(),
        'record 1: field "output" holds an item that must be a string, got int',
    ),
    "empty label in a list": (
        json.dumps([{"input": "t", "output": ["b", " "]}]).encode(),
        'record 1: empty label in "output"',
    ),
    "empty text": (json.dumps([GOOD[0], GOOD[1], {"input": "  ", "output": "b"}]).encode(), "record 3: empty text"),
    "empty file": (b"", "file is empty"),
    "whitespace file": (b"  \n\n", "file is empty"),
    "empty array": (b"[]", "contains no records"),
    "not an object": (b'["just a string"]', "record 1: expected an object"),
    "not an array": (b'{"input": "a", "output": "b"} trailing', "line 1"),
    "non-UTF-8": ('[{"input": "Привет", "output": "b"}]'.encode("cp1251"), "not valid UTF-8"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_fails_naming_file_and_record_and_writes_nothing(tmp_path, cfg, name):
    content, expected = BAD_INPUTS[name]
    write_json(tmp_path / "raw" / "good.json", GOOD)
    preprocess(cfg)  # earlier outputs exist; a failed run must leave them untouched
    before = outputs(tmp_path)
    (tmp_path / "raw" / "zz-bad.json").write_bytes(content)

    with pytest.raises(PipelineError) as err:
        preprocess(cfg)

    message = str(err.value)
    assert "zz-bad.json" in message and expected in message
    assert "\n" not in message
    assert outputs(tmp_path) == before


def test_no_raw_files_is_an_error(tmp_path, cfg):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("not data")
    with pytest.raises(PipelineError, match=r"no \*\.json, \*\.jsonl, \*\.csv, \*\.tsv, \*\.parquet files"):
        preprocess(cfg)
    assert not (tmp_path / "processed").exists()


def test_missing_raw_folder_is_an_error(tmp_path, cfg):
    with pytest.raises(PipelineError, match="does not exist"):
        preprocess(cfg)


def test_corrupt_existing_mapping_is_an_error(tmp_path, cfg):
    write_json(tmp_path / "raw" / "a.json", GOOD)
    write_json(tmp_path / "processed" / "output_to_symbol.json", {"Sport": "A1"})
    with pytest.raises(PipelineError, match=r"output_to_symbol.json: label 'Sport'"):
        preprocess(cfg)


def test_cli_runs_alone_with_the_same_config_and_fails_in_one_line(tmp_path):
    write_json(tmp_path / "raw" / "a.json", GOOD)
    out = tmp_path / "processed"
    overrides = [
        f"data.raw_dir={tmp_path / 'raw'}",
        f"data.dataset_path={out / 'c.json'}",
        f"data.label_mapping_path={out / 'm.json'}",
    ]
    ok = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "finetune_pipeline.cli.preprocess", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((out / "m.json").read_text()) == {"Economy": "a", "Sport": "b"}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in ok.stderr.splitlines() if "|" in line}
    assert "finetune_pipeline" in imported and not imported & {
        "torch",
        "transformers",
    }  # preprocessing loads no model library

    (tmp_path / "raw" / "b.json").write_text('[{"input": "x"}]')
    bad = subprocess.run(
        [sys.executable, "-m", "finetune_pipeline.cli.preprocess", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    errors = [line for line in (bad.stdout + bad.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and 'b.json: record 1: missing field "output"' in errors[0]


def test_shipped_example_dataset_is_valid(tmp_path):
    out = tmp_path / "processed"
    cfg = compose_config([f"data.dataset_path={out / 'c.json'}", f"data.label_mapping_path={out / 'm.json'}"]).data
    summary = preprocess(cfg)
    assert summary["records_written"] >= 200 and summary["labels"] >= 4
    assert len(list((REPO / "data" / "raw").glob("*"))) >= 2


def test_reading_the_raw_data_shows_a_bar_on_a_terminal_only(tmp_path, cfg, monkeypatch, capsys):
    write_json(tmp_path / "raw" / "part-1.json", GOOD)
    size = (tmp_path / "raw" / "part-1.json").stat().st_size
    preprocess(cfg)
    assert "reading the raw data" not in capsys.readouterr().err  # a log, a pipe, CI: no bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    (tmp_path / "processed" / "combined_dataset.json").unlink()
    preprocess(cfg)
    err = capsys.readouterr().err
    assert "reading the raw data" in err and f"/{size}.0 " in err  # counts the bytes of every part
