"""Hostile raw files: every input either parses into records or fails with a one-line PipelineError."""

import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_pipeline.data.raw_reader import normalise_label, read_raw_file
from finetune_pipeline.data.source import processed_paths
from finetune_pipeline.errors import PipelineError
from helpers import compose_config


def outcome(tmp_path, data: bytes):
    path = tmp_path / "part.json"
    try:
        return read_raw_file(path, data)
    except PipelineError as e:
        assert "\n" not in str(e) and "part.json" in str(e)
        return e


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_garbage_bytes_never_crash(tmp_path, data):
    outcome(tmp_path, data)


records = st.lists(
    st.fixed_dictionaries({"input": st.text(min_size=1), "output": st.text(min_size=1)}), min_size=1, max_size=20
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records, st.integers(min_value=0, max_value=400))
def test_truncated_json_is_refused_or_complete(tmp_path, recs, cut):
    data = json.dumps(recs, ensure_ascii=False).encode()
    result = outcome(tmp_path, data[: min(cut, len(data))])
    if not isinstance(result, PipelineError):
        # only a cut that kept the whole document (or whole lines) can parse
        assert [r.text for r in result] == [r["input"] for r in recs][: len(result)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records)
def test_any_text_round_trips_including_control_characters_and_mixed_scripts(tmp_path, recs):
    result = outcome(tmp_path, json.dumps(recs, ensure_ascii=False).encode())
    if isinstance(result, PipelineError):  # only blank texts or labels may be refused
        assert "empty" in str(result)
    else:
        # texts exactly as written; labels without surrounding whitespace, in Unicode NFC
        assert [(r.text, r.label) for r in result] == [(r["input"], normalise_label(r["output"])) for r in recs]
        assert all(r.label == unicodedata.normalize("NFC", r.label).strip() for r in result)


def test_duplicate_keys_are_refused_naming_the_key(tmp_path):
    data = b'[{"input": "a", "output": "x", "output": "y"}]'
    with pytest.raises(PipelineError, match='duplicate key "output"'):
        read_raw_file(tmp_path / "part.json", data)
    lines = b'{"input": "a", "output": "x"}\n{"input": "b", "input": "c", "output": "x"}\n'
    with pytest.raises(PipelineError, match='line 2: duplicate key "input"'):
        read_raw_file(tmp_path / "part.jsonl", lines)


def test_labels_that_look_like_symbols_get_their_own_symbols(tmp_path):
    from finetune_pipeline.data.symbols import extend_mapping

    mapping = extend_mapping({}, ["b", "a", "zz"])
    assert mapping == {"a": "a", "b": "b", "zz": "c"}  # a label is a name, never taken as a symbol


def test_a_single_class_is_refused_before_training(project, in_project):
    import shutil

    raw = project / "data/raw"
    shutil.rmtree(raw)
    raw.mkdir()
    (raw / "one.json").write_text(json.dumps([{"input": f"text {i}", "output": "sport"} for i in range(30)]))
    with pytest.raises(PipelineError, match="every record has the label 'sport'; a classifier needs at least 2"):
        in_project("single")


def test_very_long_texts_are_truncated_not_fatal(project, in_project):
    long = " ".join(["слово word"] * 5000)  # far beyond max_length=32 tokens
    (project / "data/raw/part-9.json").write_text(json.dumps([{"input": long, "output": "sport"}], ensure_ascii=False))
    summary, _, _ = in_project("long", "training.epochs=1")
    assert 0 <= summary["test/accuracy"] <= 1


def replace_raw(project, records):
    import shutil

    raw = project / "data/raw"
    shutil.rmtree(raw)
    raw.mkdir()
    (raw / "part.json").write_text(json.dumps(records, ensure_ascii=False))


def test_thousands_of_classes_get_distinct_symbols_split_and_report(project, monkeypatch):
    """The fast equivalent of the slow training run below: preprocessing, class index, split and
    data report of 1,200 classes (symbols past two letters)."""
    from finetune_pipeline.data.choose_split import choose_split
    from finetune_pipeline.data.classes import ClassIndex
    from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined
    from finetune_pipeline.data.report import build_report

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    classes = 1200
    replace_raw(
        project, [{"input": f"topic {c} item {i}", "output": f"label {c}"} for c in range(classes) for i in range(10)]
    )
    cfg = compose_config([]).data
    ensure_preprocessed(cfg)
    dataset = load_combined(cfg)
    index = ClassIndex.from_dataset(dataset.symbols, dataset.label_to_symbol)
    assert len(index) == classes and len(set(index.symbols)) == classes and "aaa" in index.symbols
    assert set(index.labels) == {f"label {c}" for c in range(classes)}
    ids = index.ids(dataset.symbols)
    chosen = choose_split(cfg, dataset.files, ids, index.display_names(), keeps_own=False)
    assert all(len({ids[i] for i in part}) == classes for part in chosen.split)  # every class in every split

    class Words:
        def __call__(self, texts, **kwargs):
            return {"input_ids": [t.split() for t in texts]}

    report = build_report(
        "raw", dataset.texts, [index.labels[c] for c in ids], chosen.split, chosen.how, Words(), 16, "warn"
    )
    assert len(report.classes["test"]) == classes
    assert report.labels["suspected_typo_count"] == 0  # "label 1" / "label 2" are codes, not typos


@pytest.mark.slow
def test_thousands_of_classes_train_and_keep_their_labels(project, in_project):
    classes = 1200  # symbols run a..z, aa..zz, aaa..: past two letters
    replace_raw(
        project, [{"input": f"topic {c} item {i}", "output": f"label {c}"} for c in range(classes) for i in range(10)]
    )
    summary, run, _ = in_project("many", "training.epochs=1", "data.max_length=16")
    id_to_label = json.loads((run / "id_to_label.json").read_text())
    assert len(id_to_label) == classes and len({e["symbol"] for e in id_to_label.values()}) == classes
    assert {e["label"] for e in id_to_label.values()} == {f"label {c}" for c in range(classes)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["test"]["per_class"]) >= classes and metrics["data"]["test"] == classes
    assert 0 <= summary["test/accuracy"] <= 1


def test_a_class_with_one_example_is_named_in_one_line(project, in_project):
    (project / "data/raw/part-9.json").write_text(json.dumps([{"input": "a lonely headline", "output": "lonely"}]))
    with pytest.raises(PipelineError, match=r"fewer than 3 records .*'lonely \(\w+\)' \(1\)") as error:
        in_project("one")
    assert "\n" not in str(error.value)
    assert not (project / "runs/one/metrics.json").exists()


def test_hundreds_of_too_small_classes_keep_the_message_short(project, in_project):
    replace_raw(project, [{"input": f"text {c}", "output": f"label {c}"} for c in range(500)])
    with pytest.raises(PipelineError, match="and 490 more") as error:
        in_project("small")
    assert len(str(error.value)) < 600


def test_a_dataset_of_duplicates_is_refused_after_deduplication(project, in_project, caplog):
    replace_raw(project, [{"input": "the same headline", "output": "sport"}] * 50)
    with pytest.raises(PipelineError, match="every record has the label 'sport'"):
        in_project("dups")
    assert "1 records, 49 exact duplicates dropped" in caplog.text


def test_a_raw_folder_changing_during_preprocessing_writes_nothing(project, monkeypatch):
    from finetune_pipeline.data import preprocess as pre

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    cfg = compose_config([]).data
    original = pre.read_raw_file

    def read_while_a_copy_goes_on(path, data, fields, separator=None):
        part = project / "data/raw/part-3.jsonl"  # another writer appends while we parse
        part.write_text(part.read_text() + json.dumps({"input": "late", "output": "sport"}) + "\n")
        return original(path, data, fields, separator)

    monkeypatch.setattr(pre, "read_raw_file", read_while_a_copy_goes_on)
    with pytest.raises(PipelineError, match="files changed while they were being preprocessed; nothing was written"):
        pre.preprocess(cfg)
    assert not processed_paths(cfg).dataset.exists() and not processed_paths(cfg).mapping.exists()

    monkeypatch.setattr(pre, "read_raw_file", original)
    listed = pre.list_raw_files(project / "data/raw")
    monkeypatch.setattr(pre, "list_raw_files", lambda raw_dir: [*listed, raw_dir / "part-gone.json"])
    with pytest.raises(PipelineError, match=r"part-gone.json: disappeared while data/raw was read"):
        pre.preprocess(cfg)


def test_a_full_disk_fails_naming_the_file_and_leaves_no_temporary_files(project, in_project, monkeypatch):
    import torch

    def disk_full(obj, f, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
            "data/0: file write failed\nmore C++ context"
        )

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(PipelineError, match=r"cannot write \(.*file write failed\); nothing was replaced") as error:
        in_project("full")
    assert "\n" not in str(error.value)
    assert not list(project.rglob("*.tmp"))


def test_an_unwritable_output_folder_fails_before_any_work(project, in_project):
    (project / "runs").write_text("a file where the runs folder should be")
    with pytest.raises(PipelineError, match=r"runs/blocked: output folder is not writable"):
        in_project("blocked")
