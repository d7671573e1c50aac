"""Texts holding Unicode line and paragraph separators stay one text everywhere: records are separated
by "\\n" (or "\\r\\n") only, in the raw reader, predict's inputs, predictions.jsonl, metrics.jsonl and
the exports. Also: CSV output a spreadsheet cannot run, TSV read without quoting."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune_pipeline.artifacts.atomic import text_lines
from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.inference.inputs import spreadsheet_safe

# every character str.splitlines() splits at, besides "\n" and "\r"
SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from([*SEPARATORS, "a", "б", " ", "\t", '"']), min_size=1), min_size=1))
def test_text_lines_splits_at_newlines_only(texts):
    assert text_lines("\n".join(texts)) == texts
    assert text_lines("\r\n".join(texts)) == texts


@pytest.fixture(scope="module")
def run(module_project):
    """A run whose data, and so its test texts, hold every separator inside texts."""
    project, train_run = module_project
    records = [
        {"input": f"Record {i}{SEPARATORS[i % len(SEPARATORS)]}about {topic} and more {topic}", "output": topic}
        for i in range(60)
        for topic in ("sport", "economy")
        if i % 2 == (topic == "sport")
    ]
    part = project / "data" / "raw" / "separators.jsonl"
    part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert "\u2028" in part.read_text(encoding="utf-8")  # raw in the file: valid JSON, one record per line
    try:
        return train_run("separators")
    finally:
        part.unlink()


def test_a_run_trains_predicts_evaluates_and_exports_texts_with_separators(run, tmp_path, capsys):
    rows = [
        json.loads(line)
        for line in text_lines((run / "evaluation" / "test" / "predictions.jsonl").read_text(encoding="utf-8"))
        if line
    ]
    held = [r["text"] for r in rows if any(s in r["text"] for s in SEPARATORS)]
    assert held, "the test split holds texts with separators"
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(held[:5]) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run), "--input", str(texts_file), "--output", str(out), "--precision", "fp32"]) == 0
    predicted = [json.loads(line) for line in text_lines(out.read_text(encoding="utf-8")) if line]
    assert [p["text"] for p in predicted] == held[:5]  # one prediction per line, texts intact
    labelled = tmp_path / "held.jsonl"
    labelled.write_text(
        "".join(json.dumps({"input": r["text"], "output": r["true_label"]}, ensure_ascii=False) + "\n" for r in rows),
        encoding="utf-8",
    )
    assert main(["evaluate", str(run), "--input", str(labelled)]) == 0
    assert json.loads((run / "evaluation" / "held" / "report.json").read_text())["texts"] == len(rows)
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "onnx" / "export.json").read_text())["test_texts"] == len(rows)
    steps = [json.loads(line) for line in text_lines((run / "metrics.jsonl").read_text(encoding="utf-8")) if line]
    assert steps and all(isinstance(s, dict) for s in steps)


def test_csv_output_cannot_run_as_a_spreadsheet_formula(run, tmp_path):
    hostile = ['=HYPERLINK("http://evil.example","click")', "+1+2", "-3", "@SUM(A1)", "plain text"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(t) + "\n" for t in hostile), encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["predict", str(run), "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        cells = [row["text"] for row in csv.DictReader(f)]
    assert cells == ["'" + t for t in hostile[:4]] + ["plain text"]
    assert spreadsheet_safe(0.5) == 0.5


def test_tsv_has_no_quoting(run, tmp_path):
    labelled = tmp_path / "quoted.tsv"
    labelled.write_text(
        'input\toutput\n"Quoted title" of a match\tsport\n"unbalanced quote on taxes\teconomy\n', encoding="utf-8"
    )
    assert main(["evaluate", str(run), "--input", str(labelled)]) == 0
    texts = [
        json.loads(line)["text"]
        for line in text_lines((run / "evaluation" / "quoted" / "predictions.jsonl").read_text(encoding="utf-8"))
        if line
    ]
    assert texts == ['"Quoted title" of a match', '"unbalanced quote on taxes']
