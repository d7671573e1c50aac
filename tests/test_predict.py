"""Using a trained run: the Python API, the predict and evaluate commands, the evaluation report."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main

CHECKPOINTS = {"head-only (frozen)": [], "full (fine-tuned)": ["training.freeze_backbone=false"]}


@pytest.fixture(scope="module")
def runs(module_project):
    """One frozen and one fine-tuned tiny run, shared by this module's tests."""
    _, train_run = module_project
    return {
        name: train_run(name.split()[0], "training.epochs=3", *overrides) for name, overrides in CHECKPOINTS.items()
    }


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_predictions_equal_the_runs_own_test_predictions(runs, kind):
    run = runs[kind]
    expected = read_jsonl(run / "evaluation" / "test" / "predictions.jsonl")
    clf = Classifier.from_run(run, precision="fp32")
    got = clf.predict([row["text"] for row in expected], top_k=3)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["symbol"] for g in got] == [e["symbol"] for e in expected]
    np.testing.assert_allclose([g["score"] for g in got], [e["score"] for e in expected], atol=1e-5)
    id_to_label = json.loads((run / "id_to_label.json").read_text())
    assert {g["label"] for g in got} <= {e["label"] for e in id_to_label.values()}  # labels, not symbols
    for g in got:
        assert len(g["top_k"]) == 3 and g["top_k"][0]["label"] == g["label"]
        scores = [t["score"] for t in g["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    probs = clf.probabilities([row["text"] for row in expected])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_bf16_inference_packs_its_linear_weights_once_with_autocasts_exact_outputs(runs, kind):
    """On the CPU in bf16 the classifier's linear layers hold their weights in bf16, packed once for
    oneDNN (where the build can); autocast over the fp32 checkpoint gives the very same probabilities."""
    import torch

    from finetune_pipeline.model.loading import load_classifier
    from finetune_pipeline.model.prepacked import PrepackedLinear, prepacking_available

    run = runs[kind]
    texts = [row["text"] for row in read_jsonl(run / "evaluation" / "test" / "predictions.jsonl")]
    clf = Classifier.from_run(run, device="cpu", precision="bf16")
    reference = load_classifier(run / "best_model.pt").eval()  # fp32 weights, cast by autocast on every pass
    linear = sum(isinstance(m, torch.nn.Linear) for m in reference.modules())
    packed = [m for m in clf.model.modules() if isinstance(m, PrepackedLinear)]
    plain = [m for m in clf.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear > 0 and len(packed) + len(plain) == linear
    assert len(packed) == (linear if prepacking_available() else 0)
    assert all(m.weight.dtype == torch.bfloat16 for m in plain)
    assert all(p.dtype == torch.float32 for n, p in clf.model.named_parameters() if "norm" in n.lower())
    got = clf.probabilities(texts, progress=False)
    expected = clf.probabilities(texts, progress=False, model=lambda batch: _autocast_probabilities(reference, batch))
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts))


def _autocast_probabilities(model, batch):
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(batch).float().softmax(dim=-1).numpy()


def test_the_test_report_matches_its_predictions(runs):
    folder = runs["head-only (frozen)"] / "evaluation" / "test"
    rows = read_jsonl(folder / "predictions.jsonl")
    report = json.loads((folder / "report.json").read_text())
    truth, predicted = [r["true_label"] for r in rows], [r["label"] for r in rows]
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert report["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert report["weighted_f1"] == pytest.approx(f1_score(truth, predicted, average="weighted"))
    matrix = json.loads((folder / "confusion_matrix.json").read_text())
    cm = np.array(matrix["matrix"])
    assert cm.sum() == len(rows) and np.trace(cm) == sum(t == p for t, p in zip(truth, predicted))
    for i, label in enumerate(matrix["labels"]):
        assert cm[i].sum() == report["per_class"][label]["support"] == truth.count(label)
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((runs["head-only (frozen)"] / "metrics.json").read_text())
    assert metrics["test"]["test/accuracy"] == pytest.approx(report["accuracy"])


def write_inputs(folder, texts):
    files = {
        "strings.json": json.dumps(texts, ensure_ascii=False),
        "records.json": json.dumps([{"input": t, "output": "ignored"} for t in texts], ensure_ascii=False),
        "strings.jsonl": "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n",
        "records.jsonl": "\n".join(json.dumps({"input": t}, ensure_ascii=False) for t in texts) + "\n\n",
        "lines.txt": "\n".join(texts) + "\n",
    }
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return [folder / name for name in files]


def test_predict_command_reads_every_input_format(runs, tmp_path, capsys):
    run = runs["head-only (frozen)"]
    texts = [r["text"] for r in read_jsonl(run / "evaluation" / "test" / "predictions.jsonl")][:6]
    expected = [r["label"] for r in read_jsonl(run / "evaluation" / "test" / "predictions.jsonl")][:6]
    for path in write_inputs(tmp_path, texts):
        out = tmp_path / f"{path.stem}-{path.suffix[1:]}.jsonl"
        assert main(["predict", str(run), "--input", str(path), "--output", str(out), "--precision", "fp32"]) == 0
        rows = read_jsonl(out)
        assert [r["text"] for r in rows] == texts and [r["label"] for r in rows] == expected, path.name
    as_array = tmp_path / "out.json"
    assert (
        main(["predict", str(run), "--input", str(tmp_path / "lines.txt"), "--output", str(as_array), "--top-k", "2"])
        == 0
    )
    rows = json.loads(as_array.read_text())
    assert [r["label"] for r in rows] == expected and all(len(r["top_k"]) == 2 for r in rows)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "lines.txt")]) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == expected


BAD_INPUTS = {
    "broken.json": ('[{"input": "a"', "line 1 column 15: broken JSON: Expecting ',' delimiter"),
    "numbers.json": ("[1, 2]", "record 1: expected a text (string), got int"),
    "noinput.jsonl": ('{"text": "a"}\n', 'line 1: no "input" field (--text-field names the text\'s field)'),
    "blank.jsonl": ('"ok"\n""\n', "line 2: empty text"),
    "empty.txt": ("\n\n", "no texts to classify"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_predict_inputs_fail_in_one_line_and_write_nothing(runs, tmp_path, caplog, name):
    content, message = BAD_INPUTS[name]
    (tmp_path / name).write_text(content)
    out = tmp_path / "out.jsonl"
    assert (
        main(["predict", str(runs["head-only (frozen)"]), "--input", str(tmp_path / name), "--output", str(out)]) == 1
    )
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0] == f"{tmp_path / name}: {message}" and "\n" not in errors[0]
    assert not out.exists()


def test_predict_refuses_non_utf8_and_missing_files_and_non_runs(runs, tmp_path, caplog):
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    assert main(["predict", str(runs["head-only (frozen)"]), "--input", str(tmp_path / "latin1.txt")]) == 1
    assert main(["predict", str(runs["head-only (frozen)"]), "--input", str(tmp_path / "absent.txt")]) == 1
    (tmp_path / "ok.txt").write_text("text\n")
    assert main(["predict", str(tmp_path), "--input", str(tmp_path / "ok.txt")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{tmp_path / 'latin1.txt'}: line 1: not valid UTF-8 (byte offset 3)",
        f"{tmp_path / 'absent.txt'}: cannot read (No such file or directory)",
        f"{tmp_path}: not a finished run folder (best_model.pt is missing)",
    ]


def test_evaluate_writes_the_report_into_the_run_folder(runs, tmp_path, caplog):
    run = runs["full (fine-tuned)"]
    test_rows = read_jsonl(run / "evaluation" / "test" / "predictions.jsonl")
    labelled = tmp_path / "holdout.jsonl"
    labelled.write_text(
        "".join(
            json.dumps({"input": r["text"], "output": r["true_label"]}, ensure_ascii=False) + "\n" for r in test_rows
        ),
        encoding="utf-8",
    )
    assert main(["evaluate", str(run), "--input", str(labelled)]) == 0
    folder = run / "evaluation" / "holdout"
    assert sorted(p.name for p in folder.iterdir()) == [
        "calibration.png",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "errors.jsonl",
        "errors.md",
        "predictions.jsonl",
        "report.json",
    ]
    report = json.loads((folder / "report.json").read_text())
    test_report = json.loads((run / "evaluation" / "test" / "report.json").read_text())
    assert report["texts"] == len(test_rows)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        assert report[key] == pytest.approx(test_report[key]), key  # same texts: same report as training's
    assert f"accuracy {report['accuracy']:.4f}" in caplog.text


def test_evaluate_refuses_unknown_labels_naming_the_record(runs, tmp_path, caplog):
    labelled = tmp_path / "odd.json"
    labelled.write_text(json.dumps([{"input": "a", "output": "sport"}, {"input": "b", "output": "weather"}]))
    assert main(["evaluate", str(runs["head-only (frozen)"]), "--input", str(labelled)]) == 1
    assert f"{labelled}: record 2: label 'weather' is not one of the run's classes" in caplog.text
    assert not (runs["head-only (frozen)"] / "evaluation" / "odd").exists()


@pytest.mark.slow  # the module entry point also runs in every test_serve.py server
def test_console_script_runs(runs):
    """Texts piped in: ``--input -`` reads standard input, one text per line."""
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_pipeline", "predict", str(runs["head-only (frozen)"]), "--input", "-"],
        input="Central bank raises rates\n\nСборная вышла в финал\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["Central bank raises rates", "Сборная вышла в финал"]
    assert all(0 < r["score"] <= 1 for r in rows)


def test_texts_on_the_command_line_or_json_lines_on_stdin(runs, monkeypatch, capsys, caplog):
    run = str(runs["head-only (frozen)"])
    expected = Classifier.from_run(run, precision="fp32").predict(["Central bank raises rates", "Финал кубка"])
    argv = ["predict", run, "--precision", "fp32"]
    assert main([*argv, "--text", "Central bank raises rates", "--text", "Финал кубка"]) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == [
        r["label"] for r in expected
    ]
    stdin = io.TextIOWrapper(io.BytesIO('{"input": "Central bank raises rates"}\n"Финал кубка"\n'.encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main([*argv, "--input", "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["Central bank raises rates", "Финал кубка"]
    assert [r["label"] for r in rows] == [r["label"] for r in expected]
    assert main([*argv, "--text", "ok", "--text", "  "]) == 1
    assert "--text number 2: empty text" in caplog.text
    with pytest.raises(SystemExit) as stop:  # both, or neither: a usage error
        main([*argv, "--text", "a", "--input", "-"])
    assert stop.value.code == 2


def test_every_evaluation_report_has_an_error_analysis(runs, tmp_path):
    from finetune_pipeline.evaluation.errors import confused_pairs, text_losses

    run = runs["full (fine-tuned)"]
    folder = run / "evaluation" / "test"
    rows = read_jsonl(folder / "predictions.jsonl")
    errors = read_jsonl(folder / "errors.jsonl")
    wrong = [r for r in rows if r["label"] != r["true_label"]]
    assert len(errors) == len(wrong) and {e["text"] for e in errors} == {r["text"] for r in wrong}
    assert [e["loss"] for e in errors] == sorted((e["loss"] for e in errors), reverse=True)
    for e in errors:
        assert (
            e["loss"] == pytest.approx(-np.log(e["true_probability"]), rel=1e-6) and e["score"] >= e["true_probability"]
        )
    md = (folder / "errors.md").read_text()
    assert md.startswith("# Errors: test\n") and f"{len(wrong)} of {len(rows)} texts misclassified" in md
    assert "## Most confused classes" in md and "## Per class (F1 with its 95% bootstrap interval" in md
    report = json.loads((folder / "report.json").read_text())
    for entry in report["per_class"].values():
        assert f"| {entry['f1']:.4f} | [" in md  # each class's F1 with an interval
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([1, 1, 0, 0, 1, 2])
    assert confused_pairs(y, p, ["a", "b", "c"]) == [
        {"true": "a", "predicted": "b", "count": 2, "share_of_true": 2 / 3},
        {"true": "b", "predicted": "a", "count": 1, "share_of_true": 0.5},
    ]
    probs = np.array([[0.5, 0.5], [0.0, 1.0]])
    assert text_losses(np.array([0, 0]), probs) == pytest.approx([np.log(2), -np.log(1e-18)])
