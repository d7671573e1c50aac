"""Multi-label data end to end: a JSON file whose labels are lists trains with no extra flag; the
run tunes a threshold per label on validation (folded into its logits, so 0.5 is each label's
threshold), predicts label lists, and its exports give the same label sets in plain transformers
and plain onnxruntime. Through the public interfaces: train(), the CLI, Classifier, the HTTP app."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.evaluation.multilabel import shifted
from finetune_pipeline.training.recipe import train
from helpers import IN_PROCESS, REPO, compose_config

TEXTS = [
    "The hockey club won the championship final",
    "Central bank cuts rates as the national team wins the cup",
    "Новый фильм получил премию, а биржа упала",
    "Elections next week",
]


def shipped_records() -> list[dict]:
    records = []
    for part in sorted((REPO / "data" / "raw").iterdir()):
        text = part.read_text(encoding="utf-8")
        records += json.loads(text) if part.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x]
    return records


def multilabel_records(seed: int = 0) -> list[dict]:
    """Each shipped text with its one label in a list, and as many texts of two joined texts of two topics."""
    records = shipped_records()
    rng = random.Random(seed)
    out = [{"input": r["input"], "output": [r["output"]]} for r in records]
    while len(out) < 2 * len(records):
        a, b = rng.sample(records, 2)
        if a["output"] != b["output"]:
            out.append({"input": f"{a['input']} {b['input']}", "output": [a["output"], b["output"]]})
    return out


def write_raw(project, records, name="topics.json"):
    raw = project / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.iterdir():
        old.unlink()
    (raw / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def ml_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("multilabel")
    write_raw(project, multilabel_records())
    return project


def train_in(project, name, *overrides, patch=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_PIPELINE_ROOT", str(project))
        run = project / "runs" / name
        train(compose_config([*IN_PROCESS, f"backbone.path={project / 'tiny'}", *overrides]), run)
    return run


@pytest.fixture(scope="module")
def ml_run(ml_project):
    """No flag says multi-label: the lists do. Thresholds are tuned even on this small validation split."""
    return train_in(ml_project, "ml", "training.calibration_min_texts=0", "training.epochs=3")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_lists_of_labels_train_a_multi_label_classifier_with_tuned_thresholds(ml_run):
    metrics = json.loads((ml_run / "metrics.json").read_text())
    labels = [c["label"] for c in json.loads((ml_run / "id_to_label.json").read_text()).values()]
    assert metrics["data"]["task"] == "multi_label" and metrics["data"]["classes"] == len(labels) == 5
    assert metrics["data"]["split"].startswith("stratified (iterative")
    assert {"test/micro_f1", "test/macro_f1", "test/samples_f1", "test/accuracy"} <= set(metrics["summary"])
    calibration = metrics["calibration"]
    assert calibration["method"] == "thresholds" and set(calibration["thresholds"]) == set(labels)
    assert calibration["micro_f1_tuned"] == pytest.approx(metrics["summary"]["test/micro_f1"])
    assert set(calibration["ece_per_label"]) == set(labels)
    ckpt = torch.load(ml_run / "best_model.pt", weights_only=True)
    assert ckpt["head"]["multi_label"] is True
    assert list(ckpt["head"]["thresholds"]) == pytest.approx([calibration["thresholds"][x] for x in labels])
    # the test report: a per-label table, label lists per text, no confusion matrix
    report = json.loads((ml_run / "evaluation/test/report.json").read_text())
    assert report["task"] == "multi_label" and report["micro_f1"] == pytest.approx(calibration["micro_f1_tuned"])
    assert {"hamming_loss", "mean_average_precision", "subset_accuracy", "samples_f1"} <= set(report)
    assert set(report["per_class"]) == set(labels) and all("ece" in row for row in report["per_class"].values())
    table = (ml_run / "evaluation/test/per_label.md").read_text()
    assert all(f"| {label} |" in table for label in labels)
    assert not (ml_run / "evaluation/test/confusion_matrix.json").exists()
    rows = read_jsonl(ml_run / "evaluation/test/predictions.jsonl")
    assert len(rows) == metrics["data"]["test"]
    assert any(len(r["true_labels"]) == 2 for r in rows) and any(len(r["true_labels"]) == 1 for r in rows)
    for r in rows:
        assert r["labels"] == sorted((x for x in r["scores"] if r["scores"][x] >= 0.5), key=lambda x: -r["scores"][x])


def test_every_label_is_in_every_split_and_its_share_is_kept(ml_run):
    log = (ml_run / "train.log").read_text()
    assert "task: multi-label (topics.json record" in log
    per_label = json.loads((ml_run / "evaluation/test/report.json").read_text())["per_class"]
    supports = [row["support"] for row in per_label.values()]
    assert min(supports) > 0 and max(supports) <= 2 * min(supports)


def test_predict_returns_label_lists_whose_scores_carry_the_tuned_thresholds(ml_run, tmp_path, capsys):
    clf = Classifier.from_run(ml_run, device="cpu", precision="fp32")
    assert clf.multi_label
    predicted = clf.predict(TEXTS)
    scores = clf.probabilities(TEXTS)
    thresholds = np.asarray(clf.model.config.thresholds)
    clf.model.config = type(clf.model.config)(**{**clf.model.config.__dict__, "thresholds": None})
    raw = clf.probabilities(TEXTS)  # the plain sigmoid
    assert np.abs(shifted(raw, thresholds) - scores).max() < 1e-5
    for row, p, q in zip(predicted, raw, scores):
        chosen = {clf.labels[k] for k in range(len(clf.labels)) if p[k] >= thresholds[k]}
        assert set(row["labels"]) == chosen == {x for x in row["scores"] if row["scores"][x] >= 0.5}
        assert [clf.symbols[clf.labels.index(x)] for x in row["labels"]] == row["symbols"]
        assert row["scores"] == pytest.approx(dict(zip(clf.labels, q.tolist())))
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert pipeline_main(["predict", str(ml_run), "--input", str(texts), "--min-score", "0.999"]) == 0
    strict = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["labels"] for r in strict] == [[x for x in r["labels"] if r["scores"][x] >= 0.999] for r in strict]
    assert all(set(r["labels"]) <= set(p["labels"]) for r, p in zip(strict, predicted))


def test_the_hf_export_gives_the_same_label_sets_in_plain_transformers(ml_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    out = tmp_path / "hf"
    assert pipeline_main(["export", str(ml_run), "--format", "hf", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    card = (out / "README.md").read_text()  # the model card says what the scores mean
    assert "multi-label classifier" in card and "reaches 0.5" in card and "softmax" not in card
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    answers = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)(TEXTS)
    ours = Classifier.from_run(ml_run, device="cpu", precision="fp32").predict(TEXTS)
    for theirs, mine in zip(answers, ours):
        assert {d["label"] for d in theirs if d["score"] >= 0.5} == set(mine["labels"])
        assert {d["label"]: d["score"] for d in theirs} == pytest.approx(mine["scores"], abs=1e-4)
    again = Classifier.from_pretrained(out, device="cpu", precision="fp32").predict(TEXTS)
    assert [r["labels"] for r in again] == [r["labels"] for r in ours]


def test_the_onnx_export_gives_the_same_scores_in_plain_onnxruntime(ml_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    assert pipeline_main(["export", str(ml_run), "--format", "onnx", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    clf = Classifier.from_run(ml_run, device="cpu", precision="fp32")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for text, mine in zip(TEXTS, clf.predict(TEXTS)):
        ids = clf.tokenizer([text], return_tensors="np")
        logits, probs = session.run(None, {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})
        assert np.abs(probs[0] - 1 / (1 + np.exp(-logits[0]))).max() < 1e-6  # a sigmoid, not a softmax
        assert {clf.labels[k] for k in np.flatnonzero(probs[0] >= 0.5)} == set(mine["labels"])
    onnx = Classifier.from_onnx_export(out)
    assert onnx.multi_label and [r["labels"] for r in onnx.predict(TEXTS)] == [r["labels"] for r in clf.predict(TEXTS)]


def test_evaluate_reports_per_label_scores_of_a_labelled_file(ml_run, tmp_path):
    records = multilabel_records(seed=1)[-20:]
    path = tmp_path / "news.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    assert pipeline_main(["evaluate", str(ml_run), "--input", str(path)]) == 0
    report = json.loads((ml_run / "evaluation/news/report.json").read_text())
    assert report["texts"] == 20 and report["task"] == "multi_label"
    truth = sum(len(r["output"]) for r in records)
    assert sum(row["support"] for row in report["per_class"].values()) == truth
    rows = read_jsonl(ml_run / "evaluation/news/predictions.jsonl")
    assert [sorted(r["true_labels"]) for r in rows] == [sorted(r["output"]) for r in records]


def test_the_http_app_answers_label_sets(ml_run):
    from starlette.testclient import TestClient

    from finetune_pipeline.serving.app import create_app
    from finetune_pipeline.serving.worker import LoadedModel

    clf = Classifier.from_run(ml_run, device="cpu", precision="fp32")

    class InProcess:  # the inference process's interface, without the process
        model = LoadedModel("torch", list(clf.labels), list(clf.symbols), 0, clf.multi_label)

        def probabilities(self, texts):
            return clf.probabilities(texts, progress=False)

        def close(self):
            pass

    with TestClient(create_app([InProcess()])) as client:
        answer = client.post("/predict", json={"texts": TEXTS[:2], "min_score": 0.5})
        assert answer.status_code == 200, answer.text
        expected = clf.predict(TEXTS[:2])
        assert [p["labels"] for p in answer.json()["predictions"]] == [r["labels"] for r in expected]
        assert set(answer.json()["predictions"][0]["scores"]) == set(clf.labels)
        assert client.get("/health").json()["task"] == "multi_label"


def test_a_label_separator_reads_csv_cells_as_label_lists_and_single_label_refuses_lists(tmp_path, monkeypatch):
    records = multilabel_records()
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    with open(raw / "news.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "topics"])
        for r in records:
            writer.writerow([r["input"], "|".join(r["output"])])
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    fields = ["data.text_field=text", "data.label_field=topics", "data.label_separator=|"]
    with pytest.raises(PipelineError, match=r"news\.csv line \d+ lists other than one label, but data\.task=single"):
        train_in(tmp_path, "single", *fields, "data.task=single_label")
    assert not (tmp_path / "runs" / "single" / "metrics.json").exists()
    with pytest.raises(PipelineError, match=r"data\.split=kfold: k-fold splits are for single-label data"):
        train_in(tmp_path, "kfold", *fields, "data.split=kfold")
    run = train_in(tmp_path, "sep", *fields, "training.epochs=1", "training.class_weights=balanced")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["task"] == "multi_label" and metrics["data"]["classes"] == 5
    assert metrics["calibration"]["not_fitted"].startswith("not fitted:")  # a small validation split: 0.5 kept
    assert set(metrics["loss"]["class_weights"]) == set(metrics["calibration"]["thresholds"])
    assert all(w > 1 for w in metrics["loss"]["class_weights"].values())  # positives are rarer than negatives
    labelled = tmp_path / "more.csv"  # evaluate reads the separator the run was trained with
    with open(labelled, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "topics"], *([r["input"], "|".join(r["output"])] for r in records[-12:])])
    assert pipeline_main(["evaluate", str(run), "--input", str(labelled)]) == 0
    rows = read_jsonl(run / "evaluation/more/predictions.jsonl")
    assert [sorted(r["true_labels"]) for r in rows] == [sorted(r["output"]) for r in records[-12:]]


def test_single_labels_in_lists_stay_single_label_and_empty_lists_are_multi_label(tmp_path, monkeypatch):
    records = shipped_records()
    write_raw(tmp_path, [{"input": r["input"], "output": [r["output"]]} for r in records])
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    run = train_in(tmp_path, "one", "training.epochs=1")
    assert json.loads((run / "metrics.json").read_text())["data"]["task"] == "single_label"
    assert "label" in read_jsonl(run / "evaluation/test/predictions.jsonl")[0]
    rows = [{"input": r["input"], "output": [r["output"]] if i % 7 else []} for i, r in enumerate(records)]
    write_raw(tmp_path, rows)
    run = train_in(tmp_path, "empty", "training.epochs=1")
    assert json.loads((run / "metrics.json").read_text())["data"]["task"] == "multi_label"
    out = tmp_path / "report"  # the data report of multi-label data: each label's records, and the sets
    argv = ["inspect-data", "backbone=tiny", f"backbone.path={tmp_path / 'tiny'}", "--out", str(out)]
    assert pipeline_main(argv) == 0
    report = json.loads((out / "data_report.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        report["label_sets"]["train"]["(none)"] > 0
        and sum(report["label_sets"]["test"].values()) == (metrics["data"]["test"])
    )
    supports = json.loads((run / "evaluation/test/report.json").read_text())["per_class"]
    assert report["classes"]["test"] == {label: row["support"] for label, row in supports.items() if row["support"]}
    assert "## Label sets" in (out / "data_report.md").read_text()


@pytest.mark.parametrize(
    "overrides",
    [
        ["training.freeze_backbone=false"],
        ["adapter=lora"],
        ["adapter=top_layers", "adapter.top_layers.layers=1"],
        ["data.long_text=chunk", "data.chunk_stride=8", "data.max_length=16"],
    ],
    ids=["full", "lora", "top layers", "chunked"],
)
def test_every_training_path_trains_multi_label_and_predict_reproduces_its_test_sets(ml_project, overrides):
    name = "path-" + "-".join(o.split("=")[-1] for o in overrides)
    run = train_in(ml_project, name, "training.epochs=1", "training.calibration_min_texts=0", *overrides)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["task"] == "multi_label" and metrics["calibration"]["method"] == "thresholds"
    rows = read_jsonl(run / "evaluation/test/predictions.jsonl")
    again = Classifier.from_run(run, device="cpu", precision="fp32").predict([r["text"] for r in rows])
    for mine, recorded in zip(again, rows):
        assert mine["scores"] == pytest.approx(recorded["scores"], abs=1e-4)
        close = [x for x, s in recorded["scores"].items() if abs(s - 0.5) < 1e-4]  # a tie at the threshold may flip
        assert set(mine["labels"]) - set(close) == set(recorded["labels"]) - set(close)


def test_head_to_head_compares_label_sets(ml_project, ml_run, capsys):
    """finetune-compare on two multi-label runs: subset accuracy with McNemar's test, micro-F1 in
    macro-F1's place, per-label F1 differences, the texts one got right shown as label sets."""
    from finetune_pipeline.cli.compare import main as compare_main

    other = train_in(ml_project, "ml-other", "training.calibration_min_texts=0", "model.hidden_dim=8")
    for run in (ml_run, other):  # what train.py writes: a run folder compare accepts
        (run / ".hydra").mkdir(exist_ok=True)
        (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert compare_main([str(ml_run), str(other), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    a, b = (json.loads((r / "metrics.json").read_text())["summary"] for r in (ml_run, other))
    assert report["task"] == "multi_label" and report["f1_name"] == "micro-F1"
    assert report["accuracy"]["a"] == pytest.approx(a["test/accuracy"])  # subset accuracy
    assert report["accuracy"]["b"] == pytest.approx(b["test/accuracy"])
    assert report["macro_f1"]["a"] == pytest.approx(a["test/micro_f1"])
    assert report["macro_f1"]["b"] == pytest.approx(b["test/micro_f1"])
    per_label = json.loads((ml_run / "evaluation/test/report.json").read_text())["per_class"]
    assert {r["label"]: r["support"] for r in report["per_class_f1"]} == {k: v["support"] for k, v in per_label.items()}
    assert {r["label"]: r["f1_a"] for r in report["per_class_f1"]} == pytest.approx(
        {k: v["f1"] for k, v in per_label.items()}
    )
    lo, hi = report["ci95"]
    assert lo <= report["difference"] <= hi and 0 <= report["p_value"] <= 1
    assert compare_main([str(ml_run), str(other)]) == 0
    text = capsys.readouterr().out
    assert "subset accuracy  A" in text and "micro-F1  A" in text and "per label F1 (A-B):" in text


def test_an_interrupted_multi_label_run_resumes_to_the_uninterrupted_result(stoppable, project):
    from finetune_pipeline.runtime.signals import Interrupted

    write_raw(project, multilabel_records())
    settings = ["training.epochs=2", "training.calibration_min_texts=0"]
    stoppable("whole", *settings)
    with pytest.raises(Interrupted):
        stoppable("split", *settings, stop_at=("epoch=2 step=5/", "SIGINT"))
    stoppable("split", *settings, resume=True)
    whole, split = project / "runs" / "whole", project / "runs" / "split"
    assert "resuming at epoch 2, batch 5/" in (split / "train.log").read_text()
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (whole, split))
    assert a["summary"] == b["summary"] and a["calibration"] == b["calibration"]
    for name in ("best_model.pt", "final_model.pt"):
        x, y = (torch.load(r / name, weights_only=True) for r in (whole, split))
        assert x["head"] == y["head"]
        assert all(torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"])


def test_parts_named_by_split_keep_it_and_a_missing_val_is_carved_with_every_label(tmp_path, monkeypatch):
    records = multilabel_records()
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    cut = len(records) * 4 // 5
    (raw / "news-train.json").write_text(json.dumps(records[:cut], ensure_ascii=False), encoding="utf-8")
    (raw / "news-test.json").write_text(json.dumps(records[cut:], ensure_ascii=False), encoding="utf-8")
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    run = train_in(tmp_path, "parts", "training.epochs=1")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["split"] == "files (val carved from train, iteratively stratified)"
    assert metrics["data"]["test"] == len(records) - cut  # the test part as it is
    assert all(
        row["support"] > 0
        for row in json.loads((run / "evaluation/test/report.json").read_text())["per_class"].values()
    )


def test_data_with_no_label_at_all_is_refused_in_one_line(tmp_path, monkeypatch):
    write_raw(tmp_path, [{"input": f"text number {i}", "output": []} for i in range(30)])
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    with pytest.raises(PipelineError, match="every record's label list is empty") as error:
        train_in(tmp_path, "nothing")
    assert "\n" not in str(error.value) and not (tmp_path / "runs" / "nothing" / "metrics.json").exists()


def test_parquet_list_columns_and_hf_sequences_of_class_labels_are_label_lists(tmp_path, monkeypatch):
    """Preprocessing alone: a Parquet list column, and a Hugging Face dataset whose label column is a
    Sequence(ClassLabel) (class ids read as their names), give each record its list of symbols."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    from finetune_pipeline.data.preprocess import load_combined, preprocess

    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    records = [*multilabel_records()[-40:], {"input": "no topic at all", "output": []}]
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([{"text": r["input"], "topics": r["output"]} for r in records]), raw / "n.parquet"
    )
    cfg = compose_config(["data.text_field=text", "data.label_field=topics"]).data
    preprocess(cfg)
    combined = load_combined(cfg)
    by_text = {t: s for t, s in zip(combined.texts, combined.symbols)}
    for r in records:
        assert sorted(combined.label_to_symbol[x] for x in r["output"]) == sorted(by_text[r["input"]])

    names = sorted({x for r in records for x in r["output"]})
    features = datasets.Features(
        {"text": datasets.Value("string"), "topics": datasets.Sequence(datasets.ClassLabel(names=names))}
    )
    rows = {"text": [r["input"] for r in records], "topics": [[names.index(x) for x in r["output"]] for r in records]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(tmp_path / "hf")
    cfg = compose_config(
        [
            "data.hf.path=hf",
            "data.text_field=text",
            "data.label_field=topics",
            "data.hf.splits.val=null",
            "data.hf.splits.test=null",
        ]
    ).data
    preprocess(cfg)
    combined = load_combined(cfg)
    symbol_to_label = {s: x for x, s in combined.label_to_symbol.items()}
    got = {t: sorted(symbol_to_label[s] for s in symbols) for t, symbols in zip(combined.texts, combined.symbols)}
    assert got == {r["input"]: sorted(r["output"]) for r in records}


def test_a_checkpoint_with_damaged_thresholds_is_refused_in_one_line(ml_run, tmp_path):
    import shutil

    for damaged in ([0.5, 0.5], [0.5, 0.5, 0.5, 0.5, 1.5], ["x"] * 5):
        run = tmp_path / f"run-{len(damaged)}-{damaged[-1]}"
        shutil.copytree(ml_run, run)
        ckpt = torch.load(run / "best_model.pt", weights_only=True)
        ckpt["head"]["thresholds"] = damaged
        torch.save(ckpt, run / "best_model.pt")
        with pytest.raises(PipelineError, match=r"best_model\.pt: .*thresholds") as error:
            Classifier.from_run(run, device="cpu", precision="fp32")
        assert "\n" not in str(error.value)
