"""Unit tests of the loop's maths: schedule, parameter groups, precision, pooling, accumulation."""

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from finetune_pipeline.artifacts.freeze_proof import (
    WholeEncoder,
    build_freeze_proof,
    combined_sha256,
    module_hashes,
    tensor_sha256,
)
from finetune_pipeline.config.schema import BestMetric, MixedPrecision, Pooling
from finetune_pipeline.data.batches import (
    FORWARD_OVERHEAD_TOKENS,
    LengthGroupedBatchSampler,
    PadCollator,
    TokenizedTexts,
    eval_loader,
    sorted_batches,
    train_loader,
)
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.model.classifier import HeadConfig, TextClassifier, pool
from finetune_pipeline.runtime.precision import cpu_auto_precision, cpu_supports_bf16, resolve_precision
from finetune_pipeline.training.loop import fit, is_better
from finetune_pipeline.training.optim import build_optimizer, param_groups
from finetune_pipeline.training.schedule import build_scheduler, lr_multiplier, optimizer_steps
from finetune_pipeline.training.state import Trainer
from helpers import compose_config


def test_lr_warms_up_linearly_then_decays_to_zero():
    values = [lr_multiplier(s, warmup_steps=4, total_steps=12) for s in range(13)]
    assert values[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert values[8] == pytest.approx(0.5)
    assert values[12] == 0.0
    assert lr_multiplier(0, 0, 10) == 1.0  # no warm-up


def test_optimizer_steps_count_partial_accumulation_windows():
    assert optimizer_steps(batches_per_epoch=10, accumulation=4, epochs=3) == 9
    assert optimizer_steps(8, 4, 2) == 4


def test_scheduler_follows_the_pure_function():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, total_steps=10, warmup_ratio=0.2)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_multiplier(s, 2, 10) for s in range(10)])


class FakeEncoder(nn.Module):
    """Embedding + LayerNorm standing in for a Hugging Face encoder (returns .last_hidden_state)."""

    def __init__(self, vocab=50, hidden=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.config = SimpleNamespace(hidden_size=hidden)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=self.norm(self.emb(input_ids)))


def make_model(seed=0, classes=3, frozen=False):
    torch.manual_seed(seed)
    return TextClassifier(FakeEncoder(), HeadConfig(8, 16, classes, "mean"), frozen=frozen)


def test_param_groups_split_head_encoder_and_no_decay():
    model = make_model()
    groups = {g["name"]: g for g in param_groups(model, head_lr=1e-3, encoder_lr=1e-5, weight_decay=0.1)}
    assert set(groups) == {"head", "head_no_decay", "encoder", "encoder_no_decay"}
    assert groups["encoder"]["lr"] == 1e-5 and groups["head"]["lr"] == 1e-3
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in groups["encoder_no_decay"]["params"])  # LayerNorm weight and bias
    frozen = make_model(frozen=True)
    assert {g["name"] for g in param_groups(frozen, 1e-3, 1e-5, 0.1)} == {"head", "head_no_decay"}
    frozen.train()
    assert frozen.head.training and not frozen.encoder.training  # a frozen encoder never trains


def test_mean_pooling_ignores_padding_and_cls_takes_the_first_token():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])  # (B=1, T=3, H=2)
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, Pooling.mean).tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, Pooling.cls).tolist() == [[1.0, 1.0]]


def test_collator_pads_to_the_longest_text_in_the_batch():
    batch = PadCollator(pad_token_id=0)([(4, [5, 6, 7], 1), (2, [8], 0)])
    assert batch["index"].tolist() == [4, 2]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision(MixedPrecision.fp32, cpu).autocast().__class__.__name__ == "nullcontext"
    auto = resolve_precision(MixedPrecision.auto, cpu)
    assert auto.name == (cpu_auto_precision()[0] if cpu_supports_bf16() else "fp32")  # the remembered decision
    assert not auto.uses_grad_scaler and not auto.grad_scaler().is_enabled()
    with pytest.raises(PipelineError, match="fp16 needs CUDA"):
        resolve_precision(MixedPrecision.fp16, cpu)


def test_best_metric_direction():
    assert is_better(0.5, float("nan"), BestMetric.macro_f1)
    assert is_better(0.6, 0.5, BestMetric.accuracy) and not is_better(0.5, 0.5, BestMetric.accuracy)
    assert is_better(0.4, 0.5, BestMetric.loss) and not is_better(0.6, 0.5, BestMetric.loss)


class WordTokenizer:
    """Whitespace tokenizer with the call signature TokenizedTexts uses."""

    def __call__(self, texts, truncation, max_length, padding):
        return {"input_ids": [[1 + (hash(w) % 40) for w in t.split()][:max_length] for t in texts]}


def run_fit(tmp_path, batch_size, accumulation, texts, labels):
    model = make_model(seed=3)
    cfg = compose_config(
        [
            f"training.batch_size={batch_size}",
            f"training.gradient_accumulation_steps={accumulation}",
            "training.epochs=1",
            "training.max_grad_norm=0",
            "training.warmup_ratio=0",
            "training.freeze_backbone=false",
            "training.progress_bar=false",
        ]
    ).training
    data = TokenizedTexts(texts, labels, WordTokenizer(), max_length=16)
    loader = eval_loader(data, batch_size, num_workers=0, pad_token_id=0)  # equal lengths: dataset order
    opt = build_optimizer(model, 1e-2, 1e-2, 0.0)
    sched = build_scheduler(opt, total_steps=optimizer_steps(len(loader), accumulation, 1), warmup_ratio=0.0)
    precision = resolve_precision(MixedPrecision.fp32, torch.device("cpu"))
    saved = []
    result = fit(
        Trainer(model, opt, sched, precision.grad_scaler()),
        loader,
        loader,
        precision,
        torch.device("cpu"),
        cfg,
        save_best=lambda: saved.append(1),
        save_state=lambda progress: "not saved",
    )
    assert saved  # the first epoch is always the best so far
    return model, result


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # texts of equal length, so the mean over 2 micro-batches equals the mean over the big batch
    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(8)]
    labels = [i % 3 for i in range(8)]
    big, r_big = run_fit(tmp_path / "a", batch_size=8, accumulation=1, texts=texts, labels=labels)
    acc, r_acc = run_fit(tmp_path / "b", batch_size=4, accumulation=2, texts=texts, labels=labels)
    assert r_big.opt_steps == r_acc.opt_steps == 1
    for (name, p), q in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_frozen_encoder_is_bit_identical_and_the_proof_says_so(tmp_path):
    model = make_model(frozen=True)
    before = module_hashes(model.encoder)
    texts, labels = [f"w{i} w{i * 2}" for i in range(12)], [i % 3 for i in range(12)]
    cfg = compose_config(["training.epochs=2", "training.progress_bar=false"]).training
    loader = train_loader(TokenizedTexts(texts, labels, WordTokenizer(), 16), 4, seed=0, num_workers=0, pad_token_id=0)
    opt = build_optimizer(model, 1e-2, 1e-2, 0.01)
    fp32 = resolve_precision(MixedPrecision.fp32, torch.device("cpu"))
    fit(
        Trainer(model, opt, build_scheduler(opt, 6, 0.0), fp32.grad_scaler()),
        loader,
        loader,
        fp32,
        torch.device("cpu"),
        cfg,
        save_best=lambda: None,
        save_state=lambda progress: "not saved",
    )
    proof = build_freeze_proof(before, module_hashes(model.encoder), model, "x", 100, "test", WholeEncoder(frozen=True))
    assert proof.status == "pass" and proof.trainable_parameters["encoder"] == 0

    with torch.no_grad():
        model.encoder.norm.bias[0] += 1e-3
    tampered = build_freeze_proof(
        before, module_hashes(model.encoder), model, "x", 100, "test", WholeEncoder(frozen=True)
    )
    assert tampered.status == "fail" and tampered.tensors_changed == ["norm.bias"]


def test_the_verdict_follows_what_was_meant_to_train():
    from finetune_pipeline.artifacts.freeze_proof import LoraAdapters, TopLayers

    model = make_model(frozen=False)
    before = module_hashes(model.encoder)
    names = list(before)
    top, other = names[-1], names[0]
    with torch.no_grad():
        model.encoder.state_dict()[top].add_(1.0)
    after = module_hashes(model.encoder)
    only_top = build_freeze_proof(before, after, model, "x", 100, "test", TopLayers((top,)))
    assert only_top.status == "pass" and only_top.verdict.startswith("PASS: only the top layers trained (1 tensors")
    assert only_top.trained_tensors == [top] and only_top.adapter == "top_layers"
    outside = build_freeze_proof(before, after, model, "x", 100, "test", TopLayers((other,)))
    assert outside.status == "fail" and outside.verdict.startswith("FAIL: 1 tensors outside the trained top layers")
    lora = LoraAdapters(lambda: {"lora_A": "h1", "lora_B": "h2"})
    unchanged = build_freeze_proof(before, before, model, "x", 100, "test", lora)
    assert (
        unchanged.status == "pass"
        and unchanged.verdict == "PASS: base encoder bit-identical, 2 LoRA adapter tensors trained"
    )
    assert unchanged.adapter_tensor_sha256 == {"lora_A": "h1", "lora_B": "h2"}
    assert build_freeze_proof(before, after, model, "x", 100, "test", lora).status == "fail"
    assert build_freeze_proof(before, after, model, "x", 100, "test", WholeEncoder(frozen=False)).status == "not_frozen"


def test_tensor_hash_sees_dtype_shape_and_single_bit_changes():
    t = torch.arange(6, dtype=torch.float32)
    assert tensor_sha256(t) != tensor_sha256(t.reshape(2, 3))
    assert tensor_sha256(t) != tensor_sha256(t.double())
    u = t.clone()
    u.view(torch.int32)[0] ^= 1  # flip the lowest bit of one float
    assert tensor_sha256(t) != tensor_sha256(u)
    assert combined_sha256({"a": "1", "b": "2"}) == combined_sha256({"b": "2", "a": "1"})


def test_sorted_batches_respect_rows_and_token_budget():
    lengths = [50, 30, 48, 30, 29, 30, 44, 30]
    for batch_size, max_tokens in ((3, 0), (100, 90), (2, 60)):
        batches = sorted_batches(lengths, batch_size, max_tokens)
        assert sorted(i for b in batches for i in b) == list(range(8))
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(lengths, reverse=True)  # longest first, so b[0] is each batch's longest
        assert all(len(b) <= batch_size for b in batches)
        assert all(len(b) == 1 or len(b) * lengths[b[0]] <= max_tokens for b in batches if max_tokens)


def _cost(lengths, batches):
    return sum(FORWARD_OVERHEAD_TOKENS + len(b) * max(lengths[i] for i in b) for b in batches)


def test_sorted_batches_cost_the_least_of_all_cuts():
    # every way of cutting the sorted texts into batches (2^(n-1) of them), against the one chosen
    rnd = random.Random(3)
    for _ in range(40):
        n = rnd.randint(1, 9)
        lengths = [rnd.choice((8, 30, 31, 60, 200, 400)) + rnd.randint(0, 5) for _ in range(n)]
        batch_size, max_tokens = rnd.choice((2, 4, 64)), rnd.choice((0, 500, 2000))
        order = sorted(range(n), key=lambda i: -lengths[i])
        least = min(
            _cost(lengths, cut)
            for cut in _cuts(order)
            if all(
                len(b) <= batch_size and (len(b) == 1 or not max_tokens or len(b) * lengths[b[0]] <= max_tokens)
                for b in cut
            )
        )
        assert _cost(lengths, sorted_batches(lengths, batch_size, max_tokens)) == least


def _cuts(order):
    for mask in range(2 ** (len(order) - 1)):
        cut, current = [], [order[0]]
        for k, i in enumerate(order[1:]):
            if mask >> k & 1:
                cut.append(current)
                current = []
            current.append(i)
        yield [*cut, current]


def test_a_dozen_mixed_length_texts_are_not_cut_into_a_batch_per_length():
    # a server's batch: one pass per few texts, not the six passes a 10%-padding rule gave
    lengths = [120, 117, 94, 85, 82, 81, 73, 71, 69, 65, 58, 53, 25]
    assert len(sorted_batches(lengths, 64, 8192)) <= 3


def test_sorted_batches_keep_padding_under_ten_percent():
    lengths = [(i * 7919) % 120 + 5 for i in range(2000)]
    batches = sorted_batches(lengths, batch_size=128, max_tokens=8192)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert 1 - sum(lengths) / padded <= 0.1


def test_length_grouped_batches_are_random_complete_and_seeded():
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=10, seed=1)
    first = list(sampler)
    sampler.set_epoch(2)
    second = list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000)) and len(epoch) == len(sampler) == 100
    assert first != second  # a new order every epoch
    assert list(LengthGroupedBatchSampler(lengths, 10, seed=1)) == first  # fixed by the seed
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 5  # similar lengths within a batch (random batches would spread ~80)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    assert padded / sum(lengths) < 1.1


def test_a_resumed_epoch_skips_exactly_the_batches_already_trained():
    sampler = LengthGroupedBatchSampler([(i * 13) % 50 + 1 for i in range(95)], batch_size=8, seed=3)
    sampler.set_epoch(4)
    whole = list(sampler)
    sampler.set_epoch(4, skip=5)
    assert list(sampler) == whole[5:] and len(whole) == len(sampler) == 12
