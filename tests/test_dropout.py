"""Dropout masks drawn four to a random word: PyTorch's dropout in distribution, seeded, scoped."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from finetune_pipeline.runtime.dropout import LEVELS, word_dropout, word_masks


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_drop_at_the_rate_asked_and_scale_what_they_keep(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(2_000_000, dtype=dtype, requires_grad=True)
    y = word_dropout(x, p)
    dropped = (y == 0).float().mean().item()
    exact = round(p * LEVELS) / LEVELS
    assert abs(dropped - exact) < 5 * (exact * (1 - exact) / x.numel()) ** 0.5  # five standard errors
    scale = torch.tensor(LEVELS / (LEVELS - round(p * LEVELS)), dtype=dtype)
    assert torch.equal(y[y != 0].unique(), scale.reshape(1))
    y.sum().backward()  # the gradient goes through the kept elements, scaled alike
    assert torch.equal(x.grad, y.detach())
    words = y.detach().reshape(-1, 4) != 0  # the four slices of one word are independent
    assert abs((words[:, 0] & words[:, 3]).float().mean().item() - (1 - exact) ** 2) < 0.005


def test_masks_follow_the_seed_and_advance_pytorchs_generator():
    x = torch.ones(64, 33)
    torch.manual_seed(3)
    a, after_a = word_dropout(x, 0.1), torch.get_rng_state()
    torch.manual_seed(3)
    b = word_dropout(x, 0.1)
    torch.manual_seed(4)
    c = word_dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.set_rng_state(after_a)  # a resumed run restores the state: the next masks repeat
    d = word_dropout(x, 0.1)
    torch.set_rng_state(after_a)
    assert torch.equal(d, word_dropout(x, 0.1)) and not torch.equal(d, a)


def test_what_it_does_not_draw_is_pytorchs_own():
    x = torch.randn(8, 16)
    assert torch.equal(word_dropout(x, 0.1, training=False), x)  # evaluation: the identity
    assert torch.equal(word_dropout(x, 0.0), x)
    assert torch.equal(word_dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(1)
    expected = functional.dropout(x.clone(), 0.3, True, True)
    torch.manual_seed(1)
    assert torch.equal(word_dropout(x.clone(), 0.3, inplace=True), expected)  # in place: PyTorch's
    torch.manual_seed(1)
    assert not torch.equal(word_dropout(x.clone(), 0.3), expected)  # otherwise: masks of its own


def test_inside_the_block_every_dropout_draws_word_masks_and_pytorchs_is_back_after():
    torch_dropout = functional.dropout
    module = torch.nn.Dropout(0.2).train()
    x = torch.ones(1000, 10)
    with word_masks():
        assert functional.dropout is word_dropout
        torch.manual_seed(5)
        through_module = module(x)
        torch.manual_seed(5)
        through_function = torch.nn.functional.dropout(x, 0.2)  # what the encoders' attention calls
    torch.manual_seed(5)
    assert torch.equal(through_module, word_dropout(x, 0.2)) and torch.equal(through_function, through_module)
    assert functional.dropout is torch_dropout
    with pytest.raises(RuntimeError), word_masks():
        raise RuntimeError("a failing forward pass")
    assert functional.dropout is torch_dropout


def test_a_cpu_run_says_its_dropout_draws_word_masks(in_project):
    _, _, log = in_project("words", "training.freeze_backbone=false", "training.epochs=1", "model.dropout=0.2")
    assert "dropout 0.2: masks drawn four to a 64-bit random word (CPU)" in log


@pytest.mark.parametrize(
    ("compile_", "device", "draws"), [("false", "cpu", True), ("true", "cpu", False), ("false", "cuda", False)]
)
def test_word_masks_are_for_eager_cpu_training_only(compile_, device, draws):
    from types import SimpleNamespace

    from finetune_pipeline.training.recipe import _word_dropout

    cfg = SimpleNamespace(training=SimpleNamespace(compile=compile_))
    built = SimpleNamespace(model=torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)))
    assert _word_dropout(cfg, built, torch.device(device)) is draws
