"""data.long_text=chunk: overlapping windows, pooled per document, on every path (frozen with and
without the feature cache, fine-tuning, predict, evaluate, the exports)."""

import itertools
import json
import random

import pytest
import torch

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.data.batches import Chunking, PadCollator, TokenizedTexts, eval_loader
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.classifier import HeadConfig, TextClassifier, pool_windows
from helpers import REPO, write_json

FILLER = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "on",
    "for",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "that",
    "which",
    "it",
    "was",
    "were",
    "is",
    "are",
    "be",
    "been",
    "has",
    "had",
    "have",
    "not",
    "but",
    "or",
    "if",
    "so",
    "then",
    "than",
    "also",
    "more",
    "most",
    "some",
    "any",
    "each",
    "other",
    "such",
    "only",
    "over",
    "into",
    "after",
]


def long_documents(per_class: int = 80, filler_words: int = 90, seed: int = 0) -> list[dict]:
    """Documents several times longer than max_length whose label shows only in their last sentence:
    label-free filler (the same word distribution for every class), then a sentence of the class."""
    rnd = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for path in sorted((REPO / "data" / "raw").iterdir()):
        lines = path.read_text(encoding="utf-8")
        records = (
            json.loads(lines) if path.suffix == ".json" else [json.loads(x) for x in lines.splitlines() if x.strip()]
        )
        for r in records:
            by_label.setdefault(r["output"], []).append(r["input"])
    docs = []
    for label, sentences in sorted(by_label.items()):
        for i in range(per_class):
            filler = " ".join(rnd.choice(FILLER) for _ in range(filler_words))
            docs.append({"input": f"{filler}. {sentences[i % len(sentences)]}", "output": label})
    return docs


@pytest.fixture(scope="module")
def long_project(tmp_path_factory):
    """(project, train_run): tiny runs on a project whose raw data are the long documents."""
    from finetune_pipeline.training.recipe import train
    from helpers import IN_PROCESS, compose_config

    project = tmp_path_factory.mktemp("long_project")
    write_json(project / "data" / "raw" / "long.json", long_documents())

    def train_run(name: str, *overrides: str):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
            patch.setenv("HF_HUB_OFFLINE", "1")
            run = project / "runs" / name
            summary = train(
                compose_config(
                    [
                        *IN_PROCESS,
                        f"backbone.path={project / 'tiny'}",
                        "data.max_length=32",
                        "training.epochs=20",
                        "training.learning_rate=1e-2",
                        *overrides,
                    ]
                ),
                run,
            )
        return summary, run

    return project, train_run


def tokenizer_of(run):
    from finetune_pipeline.backbone.load import read_tokenizer

    return read_tokenizer(run / "tokenizer")


@pytest.fixture(scope="module")
def truncated(long_project):
    """(summary, run folder) of the truncate run that the chunked ones are compared with."""
    return long_project[1]("truncate")


def test_windows_cover_the_whole_text_and_overlap_by_the_stride(truncated):
    tok = tokenizer_of(truncated[1])
    text = long_documents(per_class=1)[0]["input"]
    full = tok(text, add_special_tokens=False)["input_ids"]
    data = TokenizedTexts([text, "short text"], [0, 0], tok, max_length=32, chunking=Chunking(8, "mean"))
    windows = data.input_ids[0]
    assert len(full) > 3 * 32 and len(windows) >= len(full) // 32  # several times max_length: several windows
    bodies = [w[1:-1] for w in windows]  # without the special tokens each window starts and ends with
    assert all(len(w) <= 32 for w in windows) and all(w[0] == windows[0][0] for w in windows)
    for a, b in itertools.pairwise(bodies):
        assert a[-8:] == b[:8]  # consecutive windows share stride tokens
    rebuilt = bodies[0] + [t for b in bodies[1:] for t in b[8:]]
    assert rebuilt == full  # nothing lost, nothing repeated beyond the overlap
    assert data.input_ids[1] == [TokenizedTexts(["short text"], [0], tok, 32).input_ids[0]]  # one window
    assert data.lengths() == [sum(map(len, windows)), len(data.input_ids[1][0])]


class BagEncoder(torch.nn.Module):
    """A deterministic stand-in encoder: token embeddings only (each window encodes independently)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)
        self.config = type("C", (), {"hidden_size": 8})()

    def forward(self, input_ids, attention_mask):
        return type("O", (), {"last_hidden_state": self.emb(input_ids)})()


@pytest.mark.parametrize("how", ["mean", "max"])
def test_a_document_is_its_pooled_windows_whatever_it_is_batched_with(how):
    torch.manual_seed(1)
    model = TextClassifier(BagEncoder(), HeadConfig(8, 6, 3, "mean", 0.0, 2, how), frozen=True).eval()
    docs = [[[1, 5, 7, 2], [1, 7, 9, 3, 2]], [[1, 4, 2]], [[1, 8, 8, 2], [1, 8, 6, 2], [1, 6, 3, 4, 2]]]
    batch = PadCollator(0)([(i, d, 0) for i, d in enumerate(docs)])
    assert batch["window_doc"].tolist() == [0, 0, 1, 2, 2, 2] and batch["input_ids"].shape[0] == 6
    together = model(batch)
    for i, doc in enumerate(docs):
        alone = model(PadCollator(0)([(i, doc, 0)]))
        torch.testing.assert_close(together[i : i + 1], alone)
        vectors = torch.stack([model.encoder.emb(torch.tensor(w)).mean(0) for w in doc])  # (windows, H)
        pooled = vectors.mean(0) if how == "mean" else vectors.max(0).values
        torch.testing.assert_close(alone[0], model.head(pooled))
    # gradients reach every window of the document through either pooling
    v = torch.randn(5, 4, requires_grad=True)
    pool_windows(v, torch.tensor([0, 0, 1, 1, 1]), 2, how).sum().backward()
    assert (v.grad.abs().sum(dim=1) > 0).sum() >= 2


def test_chunk_beats_truncate_when_the_label_sits_at_the_end(long_project, truncated):
    _, train_run = long_project
    chunked, run = train_run("chunk", "data.long_text=chunk", "data.chunk_stride=8")
    assert truncated[0]["test/accuracy"] <= 0.3  # the first 32 tokens hold no label: about chance (0.2)
    assert chunked["test/accuracy"] >= truncated[0]["test/accuracy"] + 0.2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["features"]["cache"] == "miss"


def test_chunking_works_on_every_path_and_predict_matches_the_run(long_project, truncated, tmp_path, caplog):
    project, train_run = long_project
    chunk = ["data.long_text=chunk", "data.chunk_stride=8", "data.chunk_pooling=mean", "training.epochs=2"]
    cached, cached_run = train_run("chunk-cached", *chunk)
    plain, _ = train_run("chunk-plain", *chunk, "training.cache_features=false")
    for key in cached:  # the cached features are the uncached path's pooled windows
        assert cached[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), key
    keys = [json.loads((r / "metrics.json").read_text())["features"]["key"] for r in (cached_run, truncated[1])]
    assert keys[0] != keys[1]  # chunked features are another cache entry
    _finetuned, tuned_run = train_run(
        "chunk-finetune", *chunk, "training.freeze_backbone=false", "training.batch_size=4", "training.epochs=1"
    )
    ckpt = torch.load(tuned_run / "best_model.pt", weights_only=True)
    assert ckpt["head"]["chunk_stride"] == 8 and ckpt["head"]["chunk_pooling"] == "mean"
    for run in (cached_run, tuned_run):  # predict reproduces the run's own test predictions
        rows = [json.loads(x) for x in (run / "evaluation" / "test" / "predictions.jsonl").read_text().splitlines()]
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
            probs = Classifier.from_run(run, device="cpu", precision="fp32").probabilities([r["text"] for r in rows])
        assert [r["label"] for r in rows] == [
            json.loads((run / "id_to_label.json").read_text())[str(int(i))]["label"] for i in probs.argmax(1)
        ]
        assert max(abs(r["score"] - float(p.max())) for r, p in zip(rows, probs)) < 1e-4
    # evaluate on the long documents; the ONNX export refuses in one line, the HF export documents the windows
    held = write_json(tmp_path / "held.json", long_documents(per_class=3, seed=5))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_PIPELINE_ROOT", str(project))
        assert pipeline_main(["evaluate", str(cached_run), "--input", str(held)]) == 0
        assert json.loads((cached_run / "evaluation" / "held" / "report.json").read_text())["texts"] == 15
        caplog.clear()
        assert pipeline_main(["export", str(cached_run), "--format", "onnx"]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "data.long_text=chunk" in errors[0] and "--format hf" in errors[0]
        assert not (cached_run / "export" / "onnx").exists()
        assert pipeline_main(["export", str(cached_run), "--format", "hf"]) == 0
        card = (cached_run / "export" / "hf" / "README.md").read_text()
        assert "cut into windows of 32 tokens that share 8 tokens" in card
        again = Classifier.from_pretrained(cached_run / "export" / "hf", device="cpu", precision="fp32")
        assert again.chunking == Chunking(8, "mean")


def test_a_stride_that_would_not_move_on_is_refused_before_anything_loads():
    from finetune_pipeline.config.load import validate
    from helpers import compose_config

    with pytest.raises(PipelineError, match=r"data\.chunk_stride must be in \[0, data\.max_length / 2 = 16\]"):
        validate(
            compose_config(["backbone=tiny", "data.max_length=32", "data.long_text=chunk", "data.chunk_stride=20"])
        )


def test_small_documents_fit_the_eval_loader_token_budget():
    # a document of several windows counts all its tokens against the batch budget
    docs = [[[1] * 30] * 4, [[1] * 30], [[1] * 10]]
    data = TokenizedTexts.__new__(TokenizedTexts)
    data.input_ids, data.labels, data.chunking = docs, [0, 0, 0], Chunking(8, "mean")
    batches = list(eval_loader(data, batch_size=8, num_workers=0, pad_token_id=0, max_tokens=100))
    assert sorted(len(b["index"]) for b in batches) == [1, 2]  # 120 tokens alone; 30 + 10 together
