"""Hostile raw files: every input either parses into records or fails with a one-line PipelineError."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from finetune_pipeline.data.raw_reader import read_raw_file
from finetune_pipeline.errors import PipelineError


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


records = st.lists(st.fixed_dictionaries({"input": st.text(min_size=1), "output": st.text(min_size=1)}), min_size=1, max_size=20)


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
        assert [(r.text, r.label) for r in result] == [(r["input"], r["output"]) for r in recs]


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
