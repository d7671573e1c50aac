"""ONNX export: one graph from token ids to probabilities that matches the PyTorch model, for frozen
(head-only checkpoint) and fine-tuned runs, on texts longer than the encoder's local-attention window;
the onnxruntime engine of predict/evaluate and Classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main
from finetune_pipeline.errors import PipelineError

pytest.importorskip("onnxruntime")

# the tiny backbone attends 32 tokens to each side (local_attention 64): these run past the window
LONG = [
    "The central bank raised interest rates again as inflation stayed high. " * 6,
    "Сборная выиграла матч в дополнительное время, и болельщики праздновали победу до утра. " * 4,
]
SHORT = ["Stocks fell", "Новый смартфон", "a"]
RUNS = {"frozen (head-only checkpoint)": [], "fine-tuned": ["training.freeze_backbone=false"]}


@pytest.fixture(scope="module")
def runs(module_project):
    _, train_run = module_project
    return {
        name: train_run(f"export-{i}", "data.max_length=160", *overrides)
        for i, (name, overrides) in enumerate(RUNS.items())
    }


@pytest.mark.parametrize("kind", RUNS)
def test_the_onnx_graph_matches_pytorch_and_int8_is_reported(runs, kind):
    run = runs[kind]
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    folder = run / "export" / "onnx"
    assert {p.name for p in folder.iterdir()} == {
        "model.onnx",
        "model_quantized.onnx",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "id_to_label.json",
        "label_to_id.json",
        "export.json",
    }
    report = json.loads((folder / "export.json").read_text())
    assert report["max_abs_probability_difference"] <= 1e-4 and report["test_texts"] >= 10
    assert set(report["test_accuracy"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert report["int8_accuracy_change"] == pytest.approx(
        report["test_accuracy"]["onnx_int8"] - report["test_accuracy"]["onnx_fp32"]
    )

    torch_clf = Classifier.from_run(run, device="cpu", precision="fp32")
    onnx_clf = Classifier.from_onnx_export(folder)  # the folder alone: no run folder, no backbone
    assert len(torch_clf.tokenizer(LONG[0])["input_ids"]) > 64 and onnx_clf.labels == torch_clf.labels
    texts = LONG + SHORT
    expected = torch_clf.probabilities(texts)
    assert np.abs(onnx_clf.probabilities(texts) - expected).max() <= 1e-4
    int8 = Classifier.from_onnx_export(folder)
    int8.graph = type(int8.graph)(folder / "model_quantized.onnx", int8.tokenizer.pad_token_id)
    assert int8.probabilities(texts).shape == expected.shape


def test_predict_with_the_onnxruntime_engine_exports_once_and_agrees(runs, tmp_path, capsys):
    run = runs["fine-tuned"]
    (tmp_path / "texts.txt").write_text("\n".join(LONG + SHORT), encoding="utf-8")
    assert (
        main(["predict", str(run), "--input", str(tmp_path / "texts.txt"), "--precision", "fp32", "--top-k", "1"]) == 0
    )
    by_torch = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    final = run / "export" / "onnx-final_model"
    assert not final.exists()
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(tmp_path / "texts.txt"),
                "--engine",
                "onnxruntime",
                "--checkpoint",
                "final_model.pt",
                "--top-k",
                "1",
            ]
        )
        == 0
    )  # exported on the fly, for that checkpoint
    assert (final / "model.onnx").is_file()
    assert json.loads((final / "export.json").read_text())["source"]["checkpoint"] == "final_model.pt"
    capsys.readouterr()
    assert (
        main(["predict", str(run), "--input", str(tmp_path / "texts.txt"), "--engine", "onnxruntime", "--top-k", "1"])
        == 0
    )
    by_onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in by_onnx] == [r["label"] for r in by_torch]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(by_onnx, by_torch)) <= 1e-4


def test_a_cached_export_of_an_earlier_checkpoint_is_made_again(runs, tmp_path, caplog):
    """A run that went on (resumed) after its export has a new best_model.pt: the onnxruntime engine
    must not answer with the old graph; a copied or touched but unchanged checkpoint keeps it."""
    import os
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(runs["frozen (head-only checkpoint)"], run, ignore=shutil.ignore_patterns("export"))
    texts = LONG + SHORT
    first = Classifier.from_run(run, engine="onnxruntime").probabilities(texts)
    report = json.loads((run / "export" / "onnx" / "export.json").read_text())
    os.utime(run / "best_model.pt")  # same bytes, new stamp: checked by hash, kept
    graph_before = (run / "export" / "onnx" / "model.onnx").stat().st_mtime_ns
    Classifier.from_run(run, engine="onnxruntime")
    assert (run / "export" / "onnx" / "model.onnx").stat().st_mtime_ns == graph_before

    ckpt = torch.load(run / "best_model.pt", weights_only=True)  # the run trained on: another head
    last = max(k for k in ckpt["state_dict"] if k.endswith(".bias"))
    ckpt["state_dict"][last] = ckpt["state_dict"][last] + torch.arange(ckpt["state_dict"][last].numel()) * 3.0
    torch.save(ckpt, run / "best_model.pt")
    caplog.clear()
    again = Classifier.from_run(run, engine="onnxruntime").probabilities(texts)
    assert "was exported from an earlier best_model.pt" in caplog.text
    assert (
        json.loads((run / "export" / "onnx" / "export.json").read_text())["source"]["checkpoint_sha256"]
        != report["source"]["checkpoint_sha256"]
    )
    expected = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts)
    assert np.abs(again - expected).max() <= 1e-4 and np.abs(again - first).max() > 0.1


def test_the_int8_engine_uses_the_quantized_graph_and_exports_it_when_missing(runs, tmp_path, caplog):
    import shutil

    from finetune_pipeline.inference.onnx_graph import INT8_MODEL, OnnxModel

    run = tmp_path / "run"
    shutil.copytree(runs["fine-tuned"], run, ignore=shutil.ignore_patterns("export"))
    texts = LONG + SHORT
    Classifier.from_run(run, engine="onnxruntime")  # an fp32 export first, as predict --engine onnxruntime makes
    folder = run / "export" / "onnx"
    assert not (folder / INT8_MODEL).exists()
    int8 = Classifier.from_run(run, engine="onnxruntime-int8")  # the same export again, now with its int8 graph
    assert "has no int8 graph yet" in caplog.text and (folder / INT8_MODEL).is_file()
    assert int8.graph.path.name == INT8_MODEL
    direct = OnnxModel(folder / INT8_MODEL, int8.tokenizer.pad_token_id).probabilities_of(int8, texts)
    assert np.array_equal(int8.probabilities(texts), direct)
    fp32 = Classifier.from_run(run, engine="onnxruntime")  # the fp32 graph is still the default one
    assert fp32.graph.path.name == "model.onnx"
    assert np.abs(fp32.probabilities(texts) - int8.probabilities(texts)).max() > 0  # two graphs, not one
    caplog.clear()
    exported = tmp_path / "fp32-only"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    with pytest.raises(
        PipelineError, match=r"no int8 graph \(model_quantized.onnx\); export the run with --quantize int8"
    ):
        Classifier.from_onnx_export(exported, int8=True)
    assert main(["serve", str(exported), "--engine", "onnxruntime-int8", "--port", "0"]) == 1
    assert "no int8 graph (model_quantized.onnx)" in caplog.text


def test_two_commands_needing_the_same_export_make_it_once(runs, tmp_path, monkeypatch):
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import finetune_pipeline.export.engines as engines
    from finetune_pipeline.export.engines import ensure_onnx_export

    run = tmp_path / "run"
    shutil.copytree(runs["frozen (head-only checkpoint)"], run, ignore=shutil.ignore_patterns("export"))
    exports = []
    real = engines.export_onnx
    monkeypatch.setattr(engines, "export_onnx", lambda *a, **k: exports.append(a) or real(*a, **k))
    with ThreadPoolExecutor(2) as pool:  # as two predict/serve commands on one run at once
        folders = list(pool.map(lambda _: ensure_onnx_export(run, "best_model.pt", None), range(2)))
    assert folders == [run / "export" / "onnx"] * 2 and len(exports) == 1
    assert Classifier.from_onnx_export(folders[0]).probabilities(SHORT).shape[0] == len(SHORT)


def test_an_existing_export_is_kept_and_a_broken_graph_is_one_line(runs, tmp_path, caplog):
    run = runs["frozen (head-only checkpoint)"]
    out = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(out)]) == 0
    before = (out / "model.onnx").read_bytes()
    assert main(["export", str(run), "--out", str(out)]) == 1
    assert "an export is already there; pass --overwrite" in caplog.text
    assert (out / "model.onnx").read_bytes() == before
    (out / "model.onnx").write_bytes(before[: len(before) // 2])  # truncated: the manifest says so
    with pytest.raises(PipelineError, match=r"model.onnx: its SHA-256 differs from the one export.json records"):
        Classifier.from_onnx_export(out)
    with pytest.raises(PipelineError, match="not an ONNX export folder"):
        Classifier.from_onnx_export(tmp_path)
    report = json.loads((out / "export.json").read_text())
    del report["files"]  # as an export made before manifests: the graph's own checks still hold
    (out / "export.json").write_text(json.dumps(report))
    with pytest.raises(PipelineError, match=r"model.onnx: not a readable ONNX graph"):
        Classifier.from_onnx_export(out)
    (out / "model.onnx").write_bytes(before)
    classes = json.loads((out / "id_to_label.json").read_text())
    (out / "id_to_label.json").write_text(json.dumps({k: v for k, v in classes.items() if k != str(len(classes) - 1)}))
    with pytest.raises(
        PipelineError, match=f"id_to_label.json: {len(classes) - 1} classes, but .*model.onnx gives {len(classes)}"
    ):
        Classifier.from_onnx_export(out)


def test_a_hugging_face_folder_stands_alone_and_carries_a_model_card(runs, tmp_path, monkeypatch):
    run = runs["frozen (head-only checkpoint)"]  # its checkpoint holds the head only: the folder gets the encoder too
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json", "id_to_label.json"} <= {
        p.name for p in out.iterdir()
    }
    config = json.loads((out / "config.json").read_text())
    labels = [c["label"] for c in json.loads((run / "id_to_label.json").read_text()).values()]
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert config["label2id"] == {label: i for i, label in enumerate(labels)}
    metrics = json.loads((run / "metrics.json").read_text())
    card = (out / "README.md").read_text()
    for fact in (
        metrics["backbone"]["sha256"],
        metrics["data"]["raw_fingerprint"],
        *labels,
        json.loads((run / "freeze_proof.json").read_text())["verdict"],
        f"{metrics['test']['test/accuracy']:.4f}",
        "not pretrained",
        "## Training config",
    ):
        assert fact in card, fact

    import finetune_pipeline.backbone.load as backbone_load

    def no_backbone(*args, **kwargs):
        raise AssertionError("the exported folder must not need the backbone folder")

    monkeypatch.setattr(backbone_load, "read_encoder", no_backbone)
    reloaded = Classifier.from_pretrained(out, device="cpu", precision="fp32")
    monkeypatch.undo()
    original = Classifier.from_run(run, device="cpu", precision="fp32")
    assert reloaded.symbols == original.symbols and reloaded.labels == original.labels
    assert np.abs(reloaded.probabilities(LONG + SHORT) - original.probabilities(LONG + SHORT)).max() <= 1e-5


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated weights", r"not a readable exported model \(SafetensorError"),
        ("id2label of fewer classes", "config.json: id2label has 1 classes and symbols"),
        ("label2id edited", "config.json: label2id is not the inverse of id2label"),
        ("id_to_label.json edited", "id_to_label.json: disagrees with config.json"),
    ],
)
def test_a_damaged_hugging_face_folder_is_refused_in_one_line(runs, tmp_path, damage, message):
    out = tmp_path / "hf"
    assert main(["export", str(runs["frozen (head-only checkpoint)"]), "--format", "hf", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    if damage == "truncated weights":
        weights = (out / "model.safetensors").read_bytes()
        (out / "model.safetensors").write_bytes(weights[:1000])
    elif damage == "id2label of fewer classes":
        config["id2label"] = {"0": config["id2label"]["0"]}
    elif damage == "label2id edited":
        first, second = list(config["label2id"])[:2]
        config["label2id"][first], config["label2id"][second] = config["label2id"][second], config["label2id"][first]
    else:
        classes = json.loads((out / "id_to_label.json").read_text())
        classes["0"]["label"], classes["1"]["label"] = classes["1"]["label"], classes["0"]["label"]
        (out / "id_to_label.json").write_text(json.dumps(classes))
    if damage in ("id2label of fewer classes", "label2id edited"):
        (out / "config.json").write_text(json.dumps(config))
    changed = {"truncated weights": "model.safetensors", "id_to_label.json edited": "id_to_label.json"}.get(
        damage, "config.json"
    )
    with pytest.raises(PipelineError, match=f"{changed}: its SHA-256 differs from the one export.json records"):
        Classifier.from_pretrained(out, device="cpu", precision="fp32")  # the manifest names the edited file
    (out / "export.json").unlink()  # as a folder exported before manifests: the folder's own checks still hold
    with pytest.raises(PipelineError, match=message) as error:
        Classifier.from_pretrained(out, device="cpu", precision="fp32")
    assert len(str(error.value).splitlines()) == 1


def test_push_uploads_the_folder_and_an_offline_hub_is_one_line(runs, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    run = runs["fine-tuned"]
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["private"]))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, **kwargs):
            calls.append(("upload_folder", folder_path, repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", str(out), "--repo-id", "me/news-topics", "--private"]) == 0
    assert calls[1] == ("create_repo", "me/news-topics", True)
    assert calls[2][:3] == ("upload_folder", str(out), "me/news-topics") and "model.safetensors" in calls[2][3]

    class OfflineApi(FakeApi):
        def create_repo(self, repo_id, **kwargs):
            raise OSError("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.\nmore")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    assert main(["push", str(out), "--repo-id", "me/news-topics"]) == 1
    assert "pushing" in caplog.text and "offline mode is enabled." in caplog.text and "more" not in caplog.text
    assert main(["push", str(tmp_path), "--repo-id", "me/news-topics"]) == 1  # not an exported folder
    assert "not an exported model folder (config.json is missing)" in caplog.text
    calls.clear()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:4096])  # damaged since export
    assert main(["push", str(out), "--repo-id", "me/news-topics"]) == 1
    assert (
        "model.safetensors: its SHA-256 differs" in caplog.text and calls == []
    )  # refused before the Hub is contacted


def test_the_onnxruntime_engine_refuses_a_gpu_or_a_half_precision(runs):
    for engine in ("onnxruntime", "onnxruntime-int8"):
        for options in ({"device": "cuda"}, {"precision": "bf16"}):
            with pytest.raises(PipelineError, match=r"the onnxruntime engines run on the CPU \(fp32 or int8 graph\)"):
                Classifier.from_run(runs["fine-tuned"], engine=engine, **options)
    with pytest.raises(PipelineError, match="engine 'tensorrt': choose one of torch, onnxruntime"):
        Classifier.from_run(runs["fine-tuned"], engine="tensorrt")


def test_an_export_never_replaces_the_run_or_a_folder_that_is_no_export(runs, tmp_path, caplog):
    run = runs["fine-tuned"]
    before = sorted(p.relative_to(run) for p in run.rglob("*") if "export" not in p.parts)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (tmp_path / "file").write_text("keep")
    for out, message in (
        (run, "is or holds the run folder"),
        (run.parent, "is or holds the run folder"),
        (run / "tokenizer", "inside the run folder only under"),
        (run / "export" / ".." / "evaluation", "inside the run folder only under"),
        (mine, "holds files but no export"),
        (tmp_path / "file", "is a file"),
    ):
        for fmt in ("onnx", "hf"):
            caplog.clear()
            assert main(["export", str(run), "--format", fmt, "--out", str(out), "--overwrite"]) == 1
            assert message in caplog.text, (out, fmt)
    assert sorted(p.relative_to(run) for p in run.rglob("*") if "export" not in p.parts) == before
    assert (mine / "notes.txt").read_text() == "keep" and (tmp_path / "file").read_text() == "keep"
    empty = tmp_path / "made-for-it"  # an empty folder is a new folder: the export goes in, no --overwrite
    empty.mkdir()
    assert main(["export", str(run), "--format", "hf", "--out", str(empty)]) == 0
    assert (empty / "model.safetensors").is_file() and (empty / "config.json").is_file()


def test_overwrite_replaces_only_an_export_this_tool_wrote(runs, tmp_path, caplog):
    run = runs["frozen (head-only checkpoint)"]
    foreign_model = tmp_path / "someone-elses-model"  # a Hugging Face model folder: config + weights, no export.json
    foreign_model.mkdir()
    (foreign_model / "config.json").write_text("{}")
    (foreign_model / "model.safetensors").write_bytes(b"weights")
    thesis = tmp_path / "thesis"  # a folder that merely holds a file named export.json
    (thesis / "src").mkdir(parents=True)
    (thesis / "export.json").write_text('{"chapter": 1}')
    (thesis / "src" / "main.tex").write_text("keep")
    ours = tmp_path / "ours"
    assert main(["export", str(run), "--format", "hf", "--out", str(ours)]) == 0
    (ours / "notes.txt").write_text("mine")  # an export, plus a file of the user's
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for out, message in (
        (foreign_model, "holds files but no export.json"),
        (thesis, "its export.json is not an export record of finetune-pipeline"),
        (ours, "holds notes.txt, which no export wrote"),
    ):
        for fmt in ("hf", "onnx"):
            caplog.clear()
            assert main(["export", str(run), "--format", fmt, "--out", str(out), "--overwrite"]) == 1
            assert message in caplog.text and "--overwrite replaces only an export this tool wrote" in caplog.text
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot
    (ours / "notes.txt").unlink()
    assert main(["export", str(run), "--format", "onnx", "--out", str(ours), "--overwrite"]) == 0
    assert (ours / "model.onnx").is_file() and not (ours / "model.safetensors").exists()  # replaced whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside it


def test_push_refuses_a_folder_holding_a_path_of_this_machine(runs, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    out = tmp_path / "hf"
    assert main(["export", str(runs["fine-tuned"]), "--format", "hf", "--out", str(out)]) == 0
    contacted = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: contacted.append(token))
    card = out / "README.md"  # the card is documentation (not in the checked files): edited by hand
    card.write_text(card.read_text() + f"\nTrained from {tmp_path / 'data' / 'raw'} on my laptop.\n")
    assert main(["push", str(out), "--repo-id", "me/news"]) == 1
    assert "README.md holds" in caplog.text and "a path of this machine" in caplog.text and contacted == []


def test_an_onnx_folder_in_the_earlier_layout_still_loads(runs, tmp_path):
    """tokenizer/ instead of the root, model.int8.onnx, no manifest of files: as exports were made before."""
    run = runs["fine-tuned"]
    out = tmp_path / "old"
    assert main(["export", str(run), "--quantize", "int8", "--out", str(out)]) == 0
    (out / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).rename(out / "tokenizer" / name)
    (out / "config.json").unlink()
    (out / "model_quantized.onnx").rename(out / "model.int8.onnx")
    report = json.loads((out / "export.json").read_text())
    del report["files"]
    (out / "export.json").write_text(json.dumps(report))
    expected = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(SHORT)
    assert np.abs(Classifier.from_onnx_export(out).probabilities(SHORT) - expected).max() <= 1e-4
    assert Classifier.from_onnx_export(out, int8=True).graph.path.name == "model.int8.onnx"


def test_a_manifest_naming_files_outside_its_folder_is_refused(runs, tmp_path):
    out = tmp_path / "onnx"
    assert main(["export", str(runs["fine-tuned"]), "--out", str(out)]) == 0
    report = json.loads((out / "export.json").read_text())
    (tmp_path / "secret").write_text("not yours")
    for name in ("../secret", str(tmp_path / "secret")):
        (out / "export.json").write_text(json.dumps({**report, "files": {**report["files"], name: "0" * 64}}))
        with pytest.raises(PipelineError, match="which is not a file inside the export folder"):
            Classifier.from_onnx_export(out)
