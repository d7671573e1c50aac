"""Raw data in every format (.json .jsonl .csv .tsv .parquet, mixed), a Hugging Face dataset as the
source, configurable text/label fields, and data.max_train_samples / max_eval_samples."""

import csv
import json
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined, preprocess, stale_reason
from finetune_pipeline.data.raw_reader import read_raw_file
from finetune_pipeline.data.source import processed_paths
from finetune_pipeline.data.split import Split, limit_samples
from finetune_pipeline.errors import PipelineError
from helpers import REPO, compose_config


def original_records():
    records = []
    for path in sorted((REPO / "data" / "raw").iterdir()):
        if path.suffix == ".json":
            records += json.loads(path.read_text(encoding="utf-8"))
        else:
            records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def write_csv(path, rows, delimiter=","):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def renamed(records, text="text", label="topic"):
    return [{"id": i, text: r["input"], label: r["output"]} for i, r in enumerate(records)]


@pytest.fixture
def mixed_project(tmp_path, monkeypatch):
    """The shipped records split over .CSV, .tsv, .parquet and .jsonl parts, with columns text/topic."""
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(tmp_path))
    rows = renamed(original_records())
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    write_csv(raw / "news-a.CSV", rows[:100])
    write_csv(raw / "news-b.tsv", rows[100:180], delimiter="\t")
    write_parquet(raw / "news-c.parquet", rows[180:260])
    (raw / "news-d.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[260:]), encoding="utf-8"
    )
    return tmp_path


FIELDS = ["data.text_field=text", "data.label_field=topic"]


def test_every_format_mixed_in_one_folder_gives_the_json_dataset(mixed_project, tmp_path_factory, monkeypatch):
    cfg = compose_config(FIELDS).data
    summary = preprocess(cfg)
    mixed = load_combined(cfg)
    assert sorted(summary["raw_files"]) == ["news-a.CSV", "news-b.tsv", "news-c.parquet", "news-d.jsonl"]
    # the same project in the original JSON parts: the same records, labels and symbols
    reference = tmp_path_factory.mktemp("json_project")
    shutil.copytree(REPO / "data" / "raw", reference / "data" / "raw")
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(reference))
    original = load_combined(_preprocessed(compose_config([]).data))
    assert Counter(zip(mixed.texts, mixed.symbols)) == Counter(zip(original.texts, original.symbols))
    assert mixed.label_to_symbol == original.label_to_symbol
    assert summary["records_read"] == len(original_records())


def _preprocessed(cfg):
    preprocess(cfg)
    return cfg


def test_duplicates_across_formats_are_dropped_and_counted(mixed_project):
    raw = mixed_project / "data" / "raw"
    rows = renamed(original_records())
    write_parquet(raw / "again.parquet", rows[:7])  # 7 records already in news-a.CSV
    summary = preprocess(compose_config(FIELDS).data)
    assert summary["duplicates_dropped"] == 7
    assert summary["records_written"] == len(rows)


def test_other_fields_are_other_data(mixed_project):
    cfg = compose_config(FIELDS).data
    preprocess(cfg)
    assert stale_reason(cfg) is None
    raw = mixed_project / "data" / "raw"
    for part in raw.iterdir():  # every part also gets a column "headline" holding other texts
        part.unlink()
    rows = [{**r, "headline": "h " + r["text"]} for r in renamed(original_records())]
    write_csv(raw / "all.csv", rows)
    preprocess(cfg)
    assert stale_reason(cfg) is None
    other = compose_config(["data.text_field=headline", "data.label_field=topic"]).data
    assert processed_paths(other).folder != processed_paths(cfg).folder  # same files, other columns: other data
    assert "missing" in stale_reason(other)
    preprocess(other)
    assert all(t.startswith("h ") for t in load_combined(other).texts)


BAD_TABLES = [
    ("news.csv", b"text,topic\nfine text,sport\n,sport\n", r"news\.csv: line 3: empty text in \"text\""),
    ("news.csv", b"text,topic\nfine text,sport\na,b,c\n", r"news\.csv: line 3: 3 fields, but the header has 2"),
    ("news.csv", b"headline,topic\nfine,sport\n", r"news\.csv: no column 'text' \(columns: 'headline', 'topic'\)"),
    ("news.csv", b"text,topic\nfine,sport\nbad \xff byte,sport\n", r"news\.csv: line 3: not valid UTF-8"),
    ("news.csv", b'text,topic\n"never closed,sport\n', r"news\.csv: line \d+: broken CSV"),
    ("news.csv", b"", r"news\.csv: file is empty"),
    ("news.csv", b"text,topic\n", r"news\.csv: contains no records"),
    ("news.tsv", b"text\ttopic\nfine\t \n", r"news\.tsv: line 2: empty label in \"topic\""),
    ("news.parquet", b"PAR1 not really", r"news\.parquet: not a readable Parquet file"),
    ("news.csv", b"text,topic,text\na,b,c\n", r"news\.csv: column 'text' appears 2 times in the header"),
]


@pytest.mark.parametrize("name,data,message", BAD_TABLES, ids=[m[:30] for _, _, m in BAD_TABLES])
def test_bad_tables_fail_in_one_line_naming_file_and_row(tmp_path, name, data, message):
    with pytest.raises(PipelineError, match=message) as e:
        read_raw_file(tmp_path / name, data, ("text", "topic"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "rows,message",
    [
        (
            [{"text": "a", "topic": 0}, {"text": "b", "topic": 3}],
            r"row 1: field \"topic\" must be a string or a list.*, got int",
        ),
        ([{"text": "a", "topic": "x"}, {"text": None, "topic": "x"}], r"row 2: field \"text\" is empty \(null\)"),
        ([{"body": "a", "topic": "x"}], r"no column 'text'"),
        ([{"text": b"bytes", "topic": "x"}], r"row 1: field \"text\" must be a string, got bytes"),
    ],
)
def test_bad_parquet_rows_fail_in_one_line(tmp_path, rows, message):
    path = write_parquet(tmp_path / "p.parquet", rows)
    with pytest.raises(PipelineError, match=message):
        read_raw_file(path, path.read_bytes(), ("text", "topic"))


def test_a_bad_part_stops_preprocessing_and_nothing_is_written(mixed_project):
    write_csv(mixed_project / "data" / "raw" / "broken.csv", [{"text": "", "topic": "x"}])
    with pytest.raises(PipelineError, match=r"broken\.csv: line 2: empty text"):
        ensure_preprocessed(compose_config(FIELDS).data)
    processed = mixed_project / "data" / "processed"
    assert not processed.exists() or not any(processed.iterdir())  # not even the folder made for the source


# -- train, predict and evaluate on tables --------------------------------------------------------


def test_train_predict_and_evaluate_on_csv_and_parquet(mixed_project, tiny_cache, tmp_path, caplog):
    from finetune_pipeline.training.recipe import train
    from helpers import IN_PROCESS

    run = mixed_project / "runs" / "tables"
    train(compose_config([*IN_PROCESS, f"backbone.path={tiny_cache}", *FIELDS, "training.epochs=1"]), run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["records"] == len(original_records())
    rows = renamed(original_records())[:12]
    # predict: a CSV with the run's text column in, CSV out; the same rows as JSON Lines
    csv_in = write_csv(tmp_path / "in.csv", rows)
    assert pipeline_main(["predict", str(run), "--input", str(csv_in), "--output", str(tmp_path / "p.csv")]) == 0
    assert pipeline_main(["predict", str(run), "--input", str(csv_in), "--output", str(tmp_path / "p.jsonl")]) == 0
    with (tmp_path / "p.csv").open(encoding="utf-8", newline="") as f:
        from_csv = list(csv.DictReader(f))
    from_jsonl = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in from_csv] == [r["text"] for r in rows]
    assert [r["label"] for r in from_csv] == [r["label"] for r in from_jsonl]
    assert [json.loads(r["top_k"]) for r in from_csv] == [r["top_k"] for r in from_jsonl]
    # evaluate: a Parquet file with the run's columns; and a CSV with other columns named on the command line
    pq_in = write_parquet(tmp_path / "held.parquet", rows)
    assert pipeline_main(["evaluate", str(run), "--input", str(pq_in)]) == 0
    report = json.loads((run / "evaluation" / "held" / "report.json").read_text())
    assert report["texts"] == 12
    other = write_csv(tmp_path / "other.csv", [{"body": r["text"], "y": r["topic"]} for r in rows])
    assert (
        pipeline_main(["evaluate", str(run), "--input", str(other), "--text-field", "body", "--label-field", "y"]) == 0
    )
    assert json.loads((run / "evaluation" / "other" / "report.json").read_text())["accuracy"] == report["accuracy"]
    # a table without the column: one line, nothing written
    caplog.clear()
    assert pipeline_main(["evaluate", str(run), "--input", str(other), "--name", "other2"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"{other}: no column 'text'" in errors[0]
    assert not (run / "evaluation" / "other2").exists()


# -- a Hugging Face dataset as the source ---------------------------------------------------------


def save_hf_dataset(folder, splits=("train", "validation", "test"), label_type="classlabel"):
    datasets = pytest.importorskip("datasets")
    records = original_records()
    names = sorted({r["output"] for r in records})
    rng = np.random.RandomState(0)
    order = rng.permutation(len(records))
    parts = {name: [records[i] for i in order[k :: len(splits)]] for k, name in enumerate(splits)}
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names) if label_type == "classlabel" else datasets.Value(label_type),
        }
    )

    def column(rows):
        if label_type == "classlabel":
            return [names.index(r["output"]) for r in rows]
        return [float(names.index(r["output"])) for r in rows]

    dd = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"sentence": [r["input"] for r in rows], "label": column(rows)}, features=features
            )
            for name, rows in parts.items()
        }
    )
    dd.save_to_disk(str(folder))
    return {name: len(rows) for name, rows in parts.items()}


HF = ["data.hf.path=hf/news", "data.text_field=sentence", "data.label_field=label"]


def test_a_saved_hugging_face_dataset_trains_with_its_own_split(in_project, project):
    sizes = save_hf_dataset(project / "hf" / "news")
    _summary, run, log = in_project("hf", *HF, "training.epochs=1")
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["data"]["train"], metrics["data"]["val"], metrics["data"]["test"]) == (
        sizes["train"],
        sizes["validation"],
        sizes["test"],
    )
    labels = {c["label"] for c in json.loads((run / "id_to_label.json").read_text()).values()}
    assert labels == {r["output"] for r in original_records()}  # class names, not ClassLabel ids
    assert "data.hf.path=hf/news" in log
    # predict / evaluate read the run's fields (sentence, label) from any table
    rows = [{"sentence": r["input"], "label": r["output"]} for r in original_records()[:10]]
    held = write_parquet(project / "held.parquet", rows)
    assert pipeline_main(["evaluate", str(run), "--input", str(held)]) == 0
    assert json.loads((run / "evaluation" / "held" / "report.json").read_text())["texts"] == 10
    out = project / "p.csv"
    assert (
        pipeline_main(["predict", str(run), "--input", str(write_csv(project / "in.csv", rows)), "--output", str(out)])
        == 0
    )
    assert len(out.read_text(encoding="utf-8").splitlines()) == 11


def test_a_hub_dataset_id_loads_through_datasets_when_online(in_project, project, monkeypatch):
    """The Hub path with load_dataset stubbed (no network here): the id, configuration and revision go
    to the library, and the run's fingerprint follows the splits' datasets fingerprints."""
    datasets = pytest.importorskip("datasets")
    save_hf_dataset(project / "saved")
    calls = []

    def load_dataset(path, name=None, revision=None):
        calls.append((path, name, revision))
        return datasets.load_from_disk(str(project / "saved"))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    _, run, _ = in_project(
        "hub",
        "data.hf.path=someone/news",
        "data.hf.name=en",
        "data.hf.revision=v1",
        "data.text_field=sentence",
        "data.label_field=label",
        "training.epochs=1",
    )
    assert calls and set(calls) == {("someone/news", "en", "v1")}
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert data["source"] == "data.hf.path=someone/news" and len(data["raw_fingerprint"]) == 64


def test_hugging_face_dataset_problems_are_one_line(project, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_hf_dataset(project / "hf" / "news", splits=("train", "test"))
    (project / "held.txt").write_text("not a dataset")
    cases = [
        ([*HF], r"data\.hf\.splits\.val='validation': hf/news has no such split \(it has: train, test\)"),
        ([*HF[:1], "data.text_field=text", "data.label_field=label"], r"hf/news\[train\]: no column 'text'"),
        (["data.hf.path=someone/news-dataset"], r"a Hub dataset, but the Hub is switched off here"),
        (["data.hf.path=./nowhere"], r"no such folder"),
        (["data.hf.path=held.txt"], r"held\.txt is a file, not a folder written by save_to_disk"),
        (
            [*HF, "data.hf.splits.train=null", "data.hf.splits.val=null", "data.hf.splits.test=null"],
            r"map at least one of train, val, test",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(PipelineError, match=message) as e:
            preprocess(compose_config(overrides).data)
        assert "\n" not in str(e.value)
    save_hf_dataset(project / "hf" / "floats", label_type="float32")
    with pytest.raises(
        PipelineError, match=r"hf/floats\[train\]: row 1: field \"label\" must be a string or a list.*, got float"
    ):
        preprocess(
            compose_config(["data.hf.path=hf/floats", "data.text_field=sentence", "data.label_field=label"]).data
        )


def test_a_dataset_with_only_a_train_split_is_split_stratified(in_project, project):
    save_hf_dataset(project / "hf" / "news", splits=("train",))
    _, run, _ = in_project(
        "hf-train-only", *HF, "data.hf.splits.val=null", "data.hf.splits.test=null", "training.epochs=1"
    )
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert data["train"] + data["val"] + data["test"] == data["records"]
    assert data["test"] == pytest.approx(
        0.1 * data["records"], abs=len(json.loads((run / "id_to_label.json").read_text()))
    )


# -- max_train_samples / max_eval_samples ---------------------------------------------------------


def test_sample_limits_keep_class_shares_and_never_move_records_between_splits():
    y = [0] * 600 + [1] * 300 + [2] * 100
    split = Split(np.arange(0, 1000, 2), np.arange(1, 1000, 4), np.arange(3, 1000, 4))
    small = limit_samples(split, y, 100, 40, seed=1)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 40, 40)
    assert set(small.train) <= set(split.train) and set(small.val) <= set(split.val)
    assert set(small.test) <= set(split.test)
    shares = Counter(y[i] for i in small.train)
    assert (shares[0], shares[1], shares[2]) == (60, 30, 10)
    assert all(np.array_equal(a, b) for a, b in zip(limit_samples(split, y, 100, 40, seed=1), small))  # seeded
    assert all(np.array_equal(a, b) for a, b in zip(limit_samples(split, y, None, 10**6, seed=1), split))
    with pytest.raises(PipelineError, match=r"data\.max_eval_samples=2: fewer than the 3 classes of the val split"):
        limit_samples(split, y, None, 2, seed=1)
    with pytest.raises(PipelineError, match=r"data\.max_train_samples=0: must be at least 1"):
        limit_samples(split, y, 0, None, seed=1)


def test_sample_limits_apply_to_a_run(in_project):
    _, run, _ = in_project("small", "data.max_train_samples=40", "data.max_eval_samples=12", "training.epochs=1")
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert (data["train"], data["val"], data["test"]) == (40, 12, 12)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.text_field=label", "data.label_field=label"], "name the same field 'label'"),
        (["data.text_field= "], "must name a key or column"),
        (["data.max_train_samples=0"], r"data\.max_train_samples must be >= 1"),
    ],
)
def test_field_and_limit_settings_are_checked_before_anything_loads(overrides, message):
    from finetune_pipeline.config.load import validate

    with pytest.raises(PipelineError, match=message):
        validate(compose_config(["backbone=tiny", *overrides]))


def test_kfold_over_a_dataset_that_keeps_its_own_split_is_one_line(in_project, project):
    save_hf_dataset(project / "hf" / "news")
    with pytest.raises(PipelineError, match=r"data\.split=kfold: data\.hf\.splits maps train, val and test") as e:
        in_project("hf-kfold", *HF, "data.split=kfold", "data.folds=3")
    assert "\n" not in str(e.value)
    _, run, _ = in_project(
        "hf-kfold-ok", *HF, "data.split=kfold", "data.folds=3", "data.hf.splits.test=null", "training.epochs=1"
    )
    assert "fold 0 of 3" in (run / "train.log").read_text()
