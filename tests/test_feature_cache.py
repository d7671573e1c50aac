"""The frozen path's feature cache, lean checkpoints and their verification (in-process runs)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_pipeline.artifacts.checkpoints import load_checkpoint, verify_backbone
from finetune_pipeline.artifacts.freeze_proof import FreezeProof
from finetune_pipeline.errors import PipelineError


def test_cached_and_uncached_frozen_paths_give_the_same_metrics(in_project):
    cached, cached_dir, cached_log = in_project("cached", "training.cache_features=true")
    plain, plain_dir, plain_log = in_project("plain", "training.cache_features=false")
    assert "feature cache: miss" in cached_log and "feature cache" not in plain_log
    assert cached.keys() == plain.keys()
    for key in cached:
        assert cached[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), key
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (cached_dir, plain_dir)]
    for a, b in zip(*history):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
    heads = [torch.load(d / "classifier_head.pt", weights_only=True) for d in (cached_dir, plain_dir)]
    for k in heads[0]:
        torch.testing.assert_close(heads[0][k], heads[1][k], rtol=1e-4, atol=1e-5)


def test_later_runs_hit_the_cache_without_loading_the_encoder(in_project):
    _first, _, log1 = in_project("first")
    _second, run2, log2 = in_project("second", "model.hidden_dim=32")
    assert "feature cache: miss" in log1 and "encoded" in log1
    assert "feature cache: hit" in log2 and "encoder not loaded" in log2 and "encoded" not in log2
    proof = FreezeProof.read(run2)
    assert proof.status == "pass" and "not loaded" in proof.how
    assert json.loads((run2 / "metrics.json").read_text())["features"]["cache"] == "hit"
    # anything that changes the features is a new entry
    _, _, log3 = in_project("longer", "data.max_length=48")
    _, _, log4 = in_project("cls", "model.pooling=cls")
    assert "feature cache: miss" in log3 and "feature cache: miss" in log4


def test_a_backbone_whose_config_changed_gets_new_features(in_project, tiny_cache, tmp_path):
    _, first, _log1 = in_project("original")
    folder = Path(json.loads((first / "metrics.json").read_text())["backbone"]["path"])  # the tiny encoder it used
    changed = tmp_path / "changed-config"
    shutil.copytree(folder, changed)
    config = json.loads((changed / "config.json").read_text())
    config["norm_eps"] = 1e-2  # same weight files, another architecture setting: other features
    (changed / "config.json").write_text(json.dumps(config))
    _, _, log2 = in_project("changed", "backbone=local", f"backbone.path={changed}")
    assert "feature cache: miss" in log2 and "encoded" in log2


def test_full_checkpoints_switch_and_lean_checkpoint_verification(in_project, tiny_cache):
    _, lean_dir, _ = in_project("lean")
    _, full_dir, _ = in_project("full", "training.full_checkpoints=true")
    lean, full = load_checkpoint(lean_dir / "best_model.pt"), load_checkpoint(full_dir / "best_model.pt")
    assert lean["kind"] == "head_only" and set(lean["state_dict"]) == {
        f"head.{k}" for k in ("1.weight", "1.bias", "4.weight", "4.bias")
    }
    assert full["kind"] == "full" and any(k.startswith("encoder.") for k in full["state_dict"])
    assert lean["backbone"] == full["backbone"] and len(lean["backbone"]["sha256"]) == 64
    assert (full_dir / "best_model.pt").stat().st_size > 5 * (lean_dir / "best_model.pt").stat().st_size

    verify_backbone(lean, lean_dir / "best_model.pt", lean["backbone"]["sha256"], tiny_cache)
    with pytest.raises(PipelineError) as err:
        verify_backbone(lean, lean_dir / "best_model.pt", "f" * 64, tiny_cache)
    assert lean["backbone"]["sha256"] in str(err.value) and "f" * 64 in str(err.value)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "best_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"best_model.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "best_model.pt")


CONCURRENT = """
import sys, time, torch
from pathlib import Path
from finetune_pipeline.features.cache import FeatureCache
root, marker = Path(sys.argv[1]), Path(sys.argv[2])
def compute():
    with open(marker, "a") as f: f.write("computed\\n")
    time.sleep(1.0)
    return torch.ones(3, 2), {}
features, hit = FeatureCache(root, rows=3).get_or_compute("key", compute)
assert features.shape == (3, 2)
print("hit" if hit else "miss")
"""


def test_concurrent_callers_compute_an_entry_once(tmp_path):
    """The fast equivalent of the two-process test below: two threads, each with its own lock handle."""
    import threading
    import time

    from finetune_pipeline.features.cache import FeatureCache

    computed, results = [], []

    def compute():
        computed.append(1)
        time.sleep(0.3)  # the other caller arrives meanwhile
        return torch.ones(3, 2), {}

    def job():
        results.append(FeatureCache(tmp_path / "cache", rows=3).get_or_compute("key", compute)[1])

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and sorted(results) == [False, True]  # one miss, one hit


@pytest.mark.slow
def test_concurrent_jobs_compute_an_entry_once(tmp_path):
    marker = tmp_path / "computed.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(tmp_path / "cache"), str(marker)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outputs == ["hit", "miss"]
    assert marker.read_text().count("computed") == 1


def test_checkpoints_load_into_a_classifier_that_reproduces_the_run(in_project, tiny_cache, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from finetune_pipeline.data.batches import TokenizedTexts, eval_loader
    from finetune_pipeline.model.loading import load_classifier
    from finetune_pipeline.runtime.precision import Precision
    from finetune_pipeline.training.metrics import predict

    _summary, run, _ = in_project("lean")
    _, full_run, _ = in_project("full", "training.full_checkpoints=true")
    texts = ["Сборная России выиграла финал чемпионата", "The central bank raised the key interest rate"]
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    loader = eval_loader(TokenizedTexts(texts, [0, 0], tokenizer, 32), 8, 0, tokenizer.pad_token_id)
    fp32 = Precision("fp32", "cpu", torch.float32)
    lean_pred = predict(load_classifier(run / "best_model.pt"), loader, fp32, torch.device("cpu"))
    full_pred = predict(load_classifier(full_run / "best_model.pt"), loader, fp32, torch.device("cpu"))
    assert lean_pred.y_pred.tolist() == full_pred.y_pred.tolist()

    # the same folder with one weight changed is a different backbone: refused, naming both hashes
    tampered = tmp_path / "tampered"
    ckpt = load_checkpoint(run / "best_model.pt")
    shutil.copytree(ckpt["backbone"]["path"], tampered)
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tampered)
    with torch.no_grad():
        next(encoder.parameters())[0, 0] += 1.0
    encoder.save_pretrained(tampered)
    with pytest.raises(PipelineError) as err:
        load_classifier(run / "best_model.pt", backbone_folder=tampered)
    assert ckpt["backbone"]["sha256"] in str(err.value) and "tampered has sha256" in str(err.value)


def test_data_split_files_trains_on_the_parts_own_split(in_project, project):
    import shutil

    raw = project / "data/raw"
    records = [r for p in sorted(raw.glob("*.json")) for r in json.loads(p.read_text(encoding="utf-8"))]
    shutil.rmtree(raw)
    raw.mkdir()
    for name, chunk in (
        ("a-train.json", records[:200]),
        ("b-valid.json", records[200:240]),
        ("c-test.json", records[240:]),
    ):
        (raw / name).write_text(json.dumps(chunk, ensure_ascii=False), encoding="utf-8")
    _, run, log = in_project("files", "data.split=files")
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert (data["train"], data["val"], data["test"]) == (200, 40, len(records) - 240)
    assert "files split train/val/test = 200/40" in log


def test_what_rank_0_broadcasts_under_torchrun_pickles(in_project, monkeypatch):
    """Under torchrun rank 0 sends the cached features (with their freeze evidence) to the other
    ranks; here every broadcast goes through pickle, on a cache miss and on a hit."""
    import pickle

    from finetune_pipeline.runtime.distributed import Dist

    monkeypatch.setattr(Dist, "broadcast", lambda self, obj: pickle.loads(pickle.dumps(obj)))
    _, _first, _ = in_project("first")
    _, second, _log = in_project("second")
    assert "encoder not loaded" in json.loads((second / "freeze_proof.json").read_text())["how"]
    assert FreezeProof.read(second).status == "pass"


def test_a_cache_entry_is_trusted_for_what_it_holds_not_for_its_name(tmp_path, caplog):
    from finetune_pipeline.features.cache import FeatureCache, TokenStateCache

    cache = FeatureCache(tmp_path, rows=3)
    computed = []

    def compute(value):
        def run():
            computed.append(value)
            return torch.full((3, 2), value), {}

        return run

    assert cache.get_or_compute("a", compute(1.0))[1] is False
    assert cache.get_or_compute("b", compute(2.0))[1] is False
    shutil.copyfile(cache.path("a"), cache.path("b"))  # b's file now holds a's features: finite, right shape
    features, hit = cache.get_or_compute("b", compute(2.0))
    assert not hit and torch.equal(features, torch.full((3, 2), 2.0)) and "holds the entry of key a" in caplog.text
    entry = torch.load(cache.path("a"), weights_only=True)
    entry["features"][0, 0] = 7.0  # values changed after writing
    torch.save(entry, cache.path("a"))
    features, hit = cache.get_or_compute("a", compute(1.0))
    assert not hit and torch.equal(features, torch.ones(3, 2)) and "differ from the SHA-256" in caplog.text
    old = {"features": torch.ones(3, 2), "meta": {}}  # written before keys and hashes were recorded
    torch.save(old, cache.path("c"))
    assert cache.get_or_compute("c", compute(5.0))[1] is True
    states = TokenStateCache(tmp_path / "states", rows=2)
    value = (torch.ones(5, 4, dtype=torch.float16), torch.tensor([2, 3]))
    assert states.get_or_compute("s", lambda: (value, {}))[1] is False
    assert states.get_or_compute("s", lambda: (value, {}))[1] is True
    assert computed == [1.0, 2.0, 2.0, 1.0]


class _Classifier(torch.nn.Module):
    """A tiny encoder + linear head taking the loader's batch dicts, as the package's classifier."""

    def __init__(self):
        from transformers import BertConfig, BertModel

        super().__init__()
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        self.encoder, self.head = BertModel(config), torch.nn.Linear(32, 3)

    def forward(self, batch):
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(hidden[:, 0])


def _tiny_texts():
    from finetune_pipeline.data.batches import TokenizedTexts

    data = TokenizedTexts.__new__(TokenizedTexts)
    data.labels, data.chunking = [0, 1, 2, 0, 1, 2, 0], None
    data.input_ids = [torch.randint(3, 60, (n,)).tolist() for n in (5, 17, 9, 30, 2, 12, 17)]
    return data


@pytest.mark.parametrize("pass_", ["encoding", "validation"])
def test_inference_passes_pack_bf16_linear_weights_with_autocasts_exact_outputs_and_give_them_back(monkeypatch, pass_):
    """A frozen run's encoding pass and every validation/test pass on the CPU in bf16 run packed linear
    weights (as predict does): the outputs are autocast's over the fp32 weights bit for bit, and
    afterwards the model holds its own nn.Linear layers again with unchanged weights (it is hashed,
    saved or trained on after the pass)."""
    import finetune_pipeline.model.prepacked as prepacked
    from finetune_pipeline.config.schema import Pooling
    from finetune_pipeline.data.batches import eval_loader
    from finetune_pipeline.features.encode import encode
    from finetune_pipeline.runtime.precision import Precision
    from finetune_pipeline.training.metrics import predict

    if not prepacked.prepacking_available():
        pytest.skip("this PyTorch build has no oneDNN weight packing")
    model, data, cpu = _Classifier(), _tiny_texts(), torch.device("cpu")
    bf16 = Precision("bf16", "cpu", torch.bfloat16)
    linear_before = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    packed_calls = []
    forward = prepacked.PrepackedLinear.forward
    monkeypatch.setattr(
        prepacked.PrepackedLinear, "forward", lambda self, x: packed_calls.append(1) or forward(self, x)
    )

    def outputs(precision):
        if pass_ == "encoding":
            return encode(model.encoder, data, Pooling("mean"), precision, cpu, 4, 0, pad_token_id=0)[0]
        return torch.from_numpy(predict(model, eval_loader(data, 4, 0, pad_token_id=0), precision, cpu).probs)

    packed = outputs(bf16)
    assert len(packed_calls) >= len(linear_before) - (pass_ == "encoding")  # every layer ran packed
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)] == linear_before
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    assert model.training  # predict puts back the mode it found
    monkeypatch.setattr(prepacked, "prepacking_available", lambda: False)  # autocast over fp32 weights
    packed_calls.clear()
    reference = outputs(bf16)
    assert not packed_calls
    assert torch.equal(packed, reference)
    assert not torch.equal(packed, outputs(Precision("fp32", "cpu", torch.float32)))


def test_compiled_models_and_adapter_layers_run_as_they_are(monkeypatch):
    """A compiled model would recompile for swapped layers, and adapter layers read their linear
    layer's weight: neither is packed."""
    import finetune_pipeline.model.prepacked as prepacked
    from finetune_pipeline.runtime.precision import Precision

    monkeypatch.setattr(prepacked, "prepacking_available", lambda: True)
    bf16 = Precision("bf16", "cpu", torch.bfloat16)
    plain, compiled, adapted = _Classifier(), _Classifier(), _Classifier()
    compiled.encoder.compile(dynamic=True)  # compiles lazily: nothing runs here
    adapted.head = type("LoraLayer", (torch.nn.Module,), {"__module__": "peft.tuners.lora.layer"})()
    adapted.head.base_layer = torch.nn.Linear(32, 3)
    with prepacked.packed_for_a_pass(plain, bf16):
        assert isinstance(plain.head, prepacked.PrepackedLinear)
    assert isinstance(plain.head, torch.nn.Linear)
    for model in (compiled, adapted):
        with prepacked.packed_for_a_pass(model, bf16):
            assert not any(isinstance(m, prepacked.PrepackedLinear) for m in model.modules())
