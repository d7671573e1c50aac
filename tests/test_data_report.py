"""Data as users expect: one processed folder per source, the official split kept, a data report that
finds leakage, conflicts, label typos and long texts before training."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.config.schema import LeakagePolicy
from finetune_pipeline.data.choose_split import choose_split, split_word
from finetune_pipeline.data.preprocess import ensure_preprocessed, load_combined
from finetune_pipeline.data.report import DataReport, apply_leakage_policy, build_report, find_leakage, normalised
from finetune_pipeline.data.source import processed_paths
from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import PipelineError
from helpers import compose_config, write_json


class SpaceTokenizer:
    """Tokens = words + 2 special tokens; what the report needs of a tokenizer."""

    def __call__(self, texts, add_special_tokens=True, truncation=False, verbose=False):
        return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}


def news(label: str, n: int, prefix: str = "") -> list[dict]:
    return [{"input": f"{prefix}{label} story number {i} about things", "output": label} for i in range(n)]


@pytest.fixture
def rooted(project, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
    return project


def test_two_sources_one_after_the_other_keep_their_own_labels(rooted, caplog):
    caplog.set_level(logging.INFO)
    other = rooted / "elsewhere" / "ag"
    write_json(other / "part-1-train.json", news("World", 12) + news("Sports", 12))
    write_json(other / "part-2-test.json", news("World", 3, "t ") + news("Sports", 3, "t "))
    shipped, ag = compose_config([]).data, compose_config([f"data.raw_dir={other}"]).data
    ensure_preprocessed(shipped)
    ensure_preprocessed(ag)
    first, second = processed_paths(shipped), processed_paths(ag)
    assert first.folder != second.folder and first.folder.parent == second.folder.parent == rooted / "data/processed"
    assert second.folder.name.startswith("ag-")
    assert json.loads(second.mapping.read_text()) == {"Sports": "a", "World": "b"}  # its own symbols, from a
    assert len(json.loads(first.mapping.read_text())) == 5  # the shipped data's five labels only
    caplog.clear()
    ensure_preprocessed(shipped)  # switching back: nothing rebuilt
    assert "up to date" in caplog.text and "preprocessing" not in caplog.text
    moved = rooted / "elsewhere" / "ag-moved"
    shutil.move(other, moved)  # a moved source gets a new folder, never the old one's files
    assert processed_paths(compose_config([f"data.raw_dir={moved}"]).data).folder != second.folder


def test_an_earlier_versions_shared_folder_lends_its_symbols_once(rooted, caplog):
    caplog.set_level(logging.INFO)
    legacy = rooted / "data" / "combined_processed"
    write_json(legacy / "combined_dataset.json", [])
    write_json(legacy / "output_to_symbol.json", {"sport": "c", "economy": "a", "Business": "f"})  # + another source's
    write_json(legacy / "preprocess_meta.json", {"source": "data/raw"})
    cfg = compose_config([]).data
    ensure_preprocessed(cfg)
    mapping = json.loads(processed_paths(cfg).mapping.read_text())
    assert mapping["sport"] == "c" and mapping["economy"] == "a" and "Business" not in mapping
    assert len(set(mapping.values())) == len(mapping) == 5
    assert "its 2 labels keep the symbols data/combined_processed/ gave them" in caplog.text
    explicit = compose_config(
        [f"data.dataset_path={legacy / 'c.json'}", f"data.label_mapping_path={legacy / 'm.json'}"]
    )
    assert processed_paths(explicit.data).dataset == legacy / "c.json"  # explicit paths are used as given


def split_of(files: list[str], labels: list[int], *overrides: str):
    cfg = compose_config(list(overrides)).data
    return choose_split(cfg, files, labels, {i: str(i) for i in range(max(labels) + 1)}, keeps_own=False)


def test_auto_keeps_the_official_split_and_carves_what_is_missing(caplog):
    files = ["part-1-train.json"] * 40 + ["part-2-validation.json"] * 8 + ["part-3-test.json"] * 8
    labels = [i % 4 for i in range(56)]
    chosen = split_of(files, labels)
    assert chosen.how == "files" and chosen.split.train.tolist() == list(range(40))
    assert chosen.split.test.tolist() == list(range(48, 56))
    assert "parts named test/train/validation: using their split; data.split=stratified re-splits" in chosen.why
    assert split_of(files, labels, "data.split=stratified").how == "stratified"  # pooled and re-split
    no_val = split_of(["news_train.jsonl"] * 48 + ["news_test.jsonl"] * 8, labels)
    assert no_val.how == "files (val carved, stratified, from train)" and no_val.split.test.tolist() == list(
        range(48, 56)
    )
    assert len(no_val.split.val) == 6 and not set(no_val.split.val) & set(no_val.split.train)  # 0.1 / 0.8 of 48
    hf_like = split_of(["train"] * 48 + ["test"] * 8, labels)  # a Hugging Face dataset's records: file = its split
    assert hf_like.how == "files (val carved, stratified, from train)"
    assert split_of(["a.json"] * 56, labels).why == "no part's name says its split (train / val / test)"
    with caplog.at_level(logging.WARNING):
        mixed = split_of(["x_train.json"] * 40 + ["extra.json"] * 16, labels)
    assert mixed.how == "stratified" and "1 of 2 parts name a split, extra.json do not" in caplog.text
    assert (split_word("latest.json"), split_word("dev.csv"), split_word("train_test.json")) == (None, "val", None)


def make_split(n_train: int, n_val: int, n_test: int) -> Split:
    edges = np.cumsum([0, n_train, n_val, n_test])
    return Split(*(np.arange(edges[k], edges[k + 1]) for k in range(3)))


def test_the_report_finds_leakage_conflicts_typos_and_long_texts(tmp_path):
    train = [f"Train headline number {i} on markets" for i in range(20)]
    val = [f"Validation headline {i} on sport" for i in range(5)]
    test = [f"Test headline {i} about films" for i in range(5)]
    test[0] = "  train HEADLINE number 3, on markets!"  # leakage: train's record 3, normalised
    val[1] = "Train headline number 7 on markets"  # leakage into val, exact
    test[1] = val[2]  # val-test overlap
    train[5] = "Train headline number 4 on markets"  # a within-split duplicate...
    texts = train + val + test
    labels = ["Markets"] * 20 + ["Sport"] * 5 + ["Films"] * 5
    labels[5] = "markets"  # ...whose label differs by case: a conflict and a label collision
    labels[6] = "Marketz"  # one letter apart
    texts[29] = "ok"  # very short
    texts[28] = " ".join(["word"] * 200)  # long: 202 tokens > max_length 64
    split = make_split(20, 5, 5)
    report = build_report("src", texts, labels, split, "files", SpaceTokenizer(), 64, "warn")
    cross = report.leakage["cross_split"]
    assert cross["count"] == 3 and cross["pairs"] == {"train-val": 1, "train-test": 1, "val-test": 1}
    assert report.conflicts["count"] == 4  # the case-only label, and the three leaked texts under other labels
    assert {"text": "Train headline number 4 on markets", "labels": ["Markets", "markets"]} in report.conflicts[
        "examples"
    ]
    assert report.duplicates["within_split"]["count"] == 1
    assert report.labels["case_collisions"] == [["Markets", "markets"]]
    assert ["Markets", "Marketz"] in report.labels["suspected_typos"]
    assert report.short_texts["count"] == 1 and report.lengths["truncated"] == 1
    assert report.lengths["truncated_share"] == pytest.approx(1 / 30) and report.lengths["hint"] is None  # < 5%
    assert report.classes["train"]["Markets"] == 18 and report.classes["imbalance_ratio"] == 18.0
    files = report.write(tmp_path)
    assert [f.name for f in files] == ["data_report.json", "data_report.md", "data_report.png"]
    again = DataReport.read(tmp_path)
    assert (again.leakage, again.labels, again.classes) == (report.leakage, report.labels, report.classes)
    saved = json.loads((tmp_path / "data_report.json").read_text())
    assert saved["leakage"]["cross_split"]["count"] == 3 and saved["lengths"]["truncated_share"] > 0
    assert "| Markets | 18 | 0 | 0 |" in (tmp_path / "data_report.md").read_text()
    assert (tmp_path / "data_report.png").read_bytes()[:4] == b"\x89PNG"
    long = build_report("src", [" ".join(["w"] * 100)] * 30, labels, split, "files", SpaceTokenizer(), 64, "warn")
    assert long.lengths["hint"].startswith("data.long_text=chunk") and any("lengths" in w for w in long.warnings())


def test_leakage_policies_warn_refuse_or_drop():
    texts = [f"text {i}" for i in range(10)] + ["text 2", "text 9"]  # val 10 = train 2, test 11 = train 9
    split = make_split(10, 1, 1)
    leakage = find_leakage(texts, ["x"] * 12, split)
    assert (leakage.count, sorted(leakage.train_rows)) == (2, [2, 9])
    assert apply_leakage_policy(LeakagePolicy.warn, split, leakage) is split
    with pytest.raises(PipelineError, match=r"^data.leakage=error: 2 val/test records have their text in train"):
        apply_leakage_policy(LeakagePolicy.error, split, leakage)
    dropped = apply_leakage_policy(LeakagePolicy.drop, split, leakage)
    assert dropped.train.tolist() == [0, 1, 3, 4, 5, 6, 7, 8] and dropped.test.tolist() == [11]
    assert normalised("  Stocks RALLY!! ") == normalised("stocks rally") == "stocks rally"


def test_inspect_data_prints_and_writes_the_report_without_a_model(rooted, tiny_cache, capsys):
    raw = rooted / "data" / "raw"
    records = json.loads((raw / "part-1.json").read_text())
    write_json(raw / "part-1.json", [*records, records[0]])  # a text twice: both copies are kept in...
    write_json(raw / "part-4.json", [{"input": records[0]["input"], "output": "politics"}])  # ...and a conflict
    assert pipeline_main(["inspect-data", "backbone=tiny", f"backbone.path={tiny_cache}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Data report: data/raw") and "split: stratified" in out
    folder = processed_paths(compose_config([]).data).folder
    report = DataReport.read(folder)
    assert report.conflicts["count"] == 1 and report.duplicates["dropped_at_preprocessing"] == 1
    assert not list(rooted.rglob("*.pt")) and not list(rooted.rglob("*.safetensors"))  # no model written or run
    assert load_combined(compose_config([]).data).texts  # the processed data is the one train.py reads
    run = rooted / "outputs" / "a-run"
    (run / ".hydra").mkdir(parents=True)
    assert pipeline_main(["inspect-data", "backbone=tiny", f"backbone.path={tiny_cache}", "--out", str(run)]) == 1
    assert not (run / "data_report.json").exists()  # a run's own report is never replaced


def test_two_preprocessings_of_one_source_build_it_once(rooted, monkeypatch):
    import threading
    import time

    import finetune_pipeline.data.preprocess as pre

    real, built = pre.preprocess, []

    def slow_preprocess(cfg):
        built.append(threading.get_ident())
        time.sleep(0.3)  # the other caller arrives while this one builds
        return real(cfg)

    monkeypatch.setattr(pre, "preprocess", slow_preprocess)
    cfg = compose_config([]).data
    callers = [threading.Thread(target=pre.ensure_preprocessed, args=(cfg,)) for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(built) == 1 and pre.stale_reason(cfg) is None


def test_a_bad_source_leaves_no_processed_folder(rooted):
    write_json(rooted / "data" / "raw" / "part-9.json", [{"input": "text", "output": 3}])
    with pytest.raises(PipelineError, match=r'part-9\.json: record 1: field "output" must be a string'):
        ensure_preprocessed(compose_config([]).data)
    assert not (rooted / "data" / "processed").exists() or not any((rooted / "data" / "processed").iterdir())


def test_two_datasets_train_one_after_the_other_with_their_own_labels(project, in_project):
    other = project / "elsewhere" / "news"
    write_json(other / "part-1-train.json", news("World", 14) + news("Sports", 14))
    write_json(other / "part-2-val.json", news("World", 3, "v ") + news("Sports", 3, "v "))
    write_json(other / "part-3-test.json", news("World", 3, "t ") + news("Sports", 3, "t "))
    _, first, _ = in_project("shipped", "training.epochs=1")
    _, second, log = in_project("news", "training.epochs=1", f"data.raw_dir={other}")
    labels = json.loads((second / "id_to_label.json").read_text())
    assert labels == {"0": {"symbol": "a", "label": "Sports"}, "1": {"symbol": "b", "label": "World"}}
    assert len(json.loads((first / "id_to_label.json").read_text())) == 5
    assert "split: files (parts named test/train/val: using their split" in log
    assert json.loads((second / "metrics.json").read_text())["data"]["test"] == 6  # the official test part
