"""``training.attention=auto``: bf16 CPU training steps run plain attention on short batches.

The two kernels must compute the same attention (padding masked, ModernBERT's local windows kept),
the choice is probed once per CPU and head shape and remembered, and a step switches the encoder
back to SDPA when it ends."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel

import finetune_pipeline.runtime.attention as attention
from finetune_pipeline.runtime.attention import AttentionByLength, plain_attention_up_to
from finetune_pipeline.runtime.precision import cpu_supports_bf16


def _encoders():
    bert = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    modern = ModernBertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        global_attn_every_n_layers=3,
        local_attention=8,  # windows much shorter than the texts: the local mask matters
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return [BertModel(bert, add_pooling_layer=False), ModernBertModel(modern)]


@pytest.mark.parametrize("encoder", _encoders(), ids=["bert", "modernbert"])
def test_plain_and_sdpa_attention_give_the_same_states_and_gradients(encoder):
    assert encoder.config._attn_implementation == "sdpa"
    encoder.eval()  # no dropout: the two kernels draw their masks differently
    ids = torch.randint(5, 100, (4, 24))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[3, 5:] = 0
    switch = AttentionByLength(encoder.config, plain_up_to=64)

    def run(step):
        encoder.zero_grad()
        with step, torch.autocast("cpu", dtype=torch.bfloat16):
            states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        (states.float() * mask.unsqueeze(-1)).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])
        return states.float()[mask.bool()], grads

    fused = run(switch.step(65))  # longer than plain_up_to: SDPA
    assert encoder.config._attn_implementation == "sdpa"
    plain = run(switch.step(24))
    assert encoder.config._attn_implementation == "sdpa"  # switched back when the step ended
    assert (plain[0] - fused[0]).abs().max() < 0.05  # bf16: the same attention, rounded apart
    assert torch.nn.functional.cosine_similarity(plain[1], fused[1], dim=0) > 0.999


def test_the_choice_is_probed_once_per_head_shape_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_CACHE", str(tmp_path))
    probes = []
    monkeypatch.setattr(
        attention, "probe_plain_up_to", lambda h, d: probes.append((h, d)) or (128, {64: 2.5, 128: 1.6, 256: 0.8})
    )
    assert plain_attention_up_to(12, 64)[0] == 128 and plain_attention_up_to(12, 64)[0] == 128
    assert plain_attention_up_to(12, 32)[0] == 128 and probes == [(12, 64), (12, 32)]
    memo = json.loads((tmp_path / "cpu_attention.json").read_text())
    [entry] = [v for k, v in memo.items() if k.endswith("12x64 bf16")]
    assert entry["plain_up_to"] == 128 and entry["sdpa_over_plain"]["256"] == 0.8


def test_the_probe_stops_at_the_first_length_where_plain_attention_does_not_win(monkeypatch):
    times = {("_fused", 64): 3.0, ("_plain", 64): 1.0, ("_fused", 128): 1.05, ("_plain", 128): 1.0}
    monkeypatch.setattr(attention, "_seconds", lambda fn, q, *rest: times[(fn.__name__, q.shape[2])])
    up_to, ratios = attention.probe_plain_up_to(2, 8)  # 256 and 512 are never timed (no key for them)
    assert up_to == 64 and ratios == pytest.approx({64: 3.0, 128: 1.05})


def test_only_bf16_cpu_steps_of_an_sdpa_encoder_switch(monkeypatch):
    monkeypatch.setattr(attention, "plain_attention_up_to", lambda h, d: (128, "test"))
    bert = _encoders()[0]
    assert AttentionByLength.for_training(bert, "fp32", torch.device("cpu")) is None
    assert AttentionByLength.for_training(bert, "bf16", torch.device("cuda")) is None
    assert AttentionByLength.for_training(bert, "bf16", torch.device("cpu")).plain_up_to == 128
    monkeypatch.setattr(attention, "plain_attention_up_to", lambda h, d: (0, "test"))
    assert AttentionByLength.for_training(bert, "bf16", torch.device("cpu")) is None  # SDPA won at every length


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_a_bf16_fine_tuning_run_says_which_kernel_its_steps_use(in_project):
    _, run, log = in_project("kernel", "training.freeze_backbone=false", "training.epochs=1", "precision=bf16")
    assert "attention in training steps: " in log
    assert json.loads((run / "metrics.json").read_text())["test"]["test/loss"] > 0
    _, _, log = in_project("sdpa", "training.freeze_backbone=false", "training.epochs=1", "training.attention=sdpa")
    assert "attention in training steps" not in log
