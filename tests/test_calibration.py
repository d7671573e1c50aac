"""Calibrated probabilities (temperature scaling) in every place a score is shown, and abstention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from finetune_pipeline import Classifier
from finetune_pipeline.cli.pipeline import main as pipeline_main
from finetune_pipeline.evaluation.calibration import ece, nll, reliability, rescaled, risk_coverage
from finetune_pipeline.training.calibration import fit_temperature


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_scaling_repairs_overconfidence_and_never_raises_the_nll():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    signal = rng.normal(0, 1, (2000, 4))
    signal[np.arange(2000), y] += 1.5  # a true class favoured: about 60% accurate
    # the true posterior is softmax(1.5 * signal) (a unit-variance shift of 1.5): 4 x is 2.67 times too sharp
    overconfident = softmax(4.0 * signal)
    fitted = fit_temperature(overconfident, y)
    assert 2.2 < fitted.value < 3.1 and fitted.val_nll_after < fitted.val_nll_before
    calibrated = rescaled(overconfident, fitted.value)
    assert ece(calibrated, y) < 0.5 * ece(overconfident, y)
    assert (calibrated.argmax(axis=1) == overconfident.argmax(axis=1)).all()  # accuracy unchanged
    honest = softmax(1.5 * signal)
    again = fit_temperature(honest, y)
    assert 0.8 < again.value < 1.25 and again.val_nll_after <= again.val_nll_before
    assert nll(rescaled(honest, again.value), y) <= nll(honest, y) + 1e-12


def test_ece_reliability_and_risk_coverage_on_a_small_example():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])  # right, wrong, right, right
    bins = reliability(probs, y, bins=5)
    # bins (.4,.6]: 0.6 right; (.6,.8]: 0.8 wrong, 0.7 right; (.8,1]: 0.9 right
    assert [(b["count"], b["accuracy"]) for b in bins] == [(1, 1.0), (2, 0.5), (1, 1.0)]
    assert ece(probs, y, bins=5) == pytest.approx((abs(1 - 0.6) + 2 * abs(0.5 - 0.75) + abs(1 - 0.9)) / 4)
    rows = risk_coverage(probs, y, coverages=(1.0, 0.5, 0.25))
    assert [(r["texts"], r["accuracy"], r["min_score"]) for r in rows] == [(4, 0.75, 0.6), (2, 0.5, 0.8), (1, 1.0, 0.9)]


@pytest.fixture(scope="module")
def calibrated_run(module_project):
    _, train_run = module_project
    return train_run("calibrated", "training.epochs=3", "training.calibration_min_texts=0")


def test_a_run_fits_its_temperature_and_every_score_carries_it(calibrated_run, tmp_path):
    run = calibrated_run
    calibration = json.loads((run / "metrics.json").read_text())["calibration"]
    t = calibration["temperature"]
    assert calibration["method"] == "temperature" and calibration["val_nll_after"] <= calibration["val_nll_before"]
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(calibration)
    for name in ("best_model.pt", "final_model.pt"):
        assert torch.load(run / name, weights_only=True)["head"]["temperature"] > 0
    assert torch.load(run / "best_model.pt", weights_only=True)["head"]["temperature"] == t
    report = json.loads((run / "evaluation" / "test" / "report.json").read_text())
    assert report["calibration"]["ece"] == pytest.approx(calibration["ece_after"])  # the report shows calibrated scores
    assert report["risk_coverage"][0]["coverage"] == 1.0 and (run / "evaluation/test/calibration.png").is_file()
    texts = ["The national currency announced new tax cuts", "Сборная вышла в финал"]
    clf = Classifier.from_run(run, device="cpu", precision="fp32")
    assert clf.model.config.temperature == t
    clf.model.config = type(clf.model.config)(**{**clf.model.config.__dict__, "temperature": 1.0})
    raw = clf.probabilities(texts)
    calibrated = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts)
    assert np.abs(calibrated - rescaled(raw, t)).max() < 1e-5 and (t == 1.0 or np.abs(calibrated - raw).max() > 1e-4)
    assert pipeline_main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0  # checked there
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["head"]["temperature"] == t
    assert f"divided by a temperature of {t:.3f}" in (tmp_path / "hf" / "README.md").read_text()  # the model card
    again = Classifier.from_pretrained(tmp_path / "hf", device="cpu", precision="fp32").probabilities(texts)
    assert np.abs(again - calibrated).max() < 1e-5


def test_too_few_validation_texts_fit_no_temperature(module_project):
    """A temperature fitted on a few dozen texts chases their noise (a near-random tiny model got T=0.13
    and a test ECE 7x worse): below training.calibration_min_texts the raw softmax is kept, and said."""
    _, train_run = module_project
    run = train_run("few", "training.epochs=1")
    calibration = json.loads((run / "metrics.json").read_text())["calibration"]
    val = json.loads((run / "metrics.json").read_text())["data"]["val"]
    assert val < 100 and calibration["temperature"] == 1.0 and calibration["ece_after"] == calibration["ece_before"]
    assert f"{val} validation texts, fewer than training.calibration_min_texts=100" in calibration["not_fitted"]
    assert torch.load(run / "best_model.pt", weights_only=True)["head"]["temperature"] == 1.0
    log = (run / "train.log").read_text()
    assert log.count("not fitted:") == 1 and "WARNING] calibration: temperature 1.000 (not fitted:" in log


def test_calibration_none_keeps_the_raw_softmax(module_project):
    _, train_run = module_project
    run = train_run("raw", "training.calibration=none")
    assert json.loads((run / "metrics.json").read_text())["calibration"] == {"method": "none"}
    assert torch.load(run / "best_model.pt", weights_only=True)["head"]["temperature"] == 1.0


def test_predict_abstains_below_min_score(calibrated_run, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("The national currency announced new tax cuts\nСборная вышла в финал\n")
    assert pipeline_main(["predict", str(calibrated_run), "--input", str(texts), "--min-score", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r["label"] is None and r["symbol"] is None and r["score"] < 1 for r in rows)
    assert pipeline_main(["predict", str(calibrated_run), "--input", str(texts), "--min-score", "0"]) == 0
    assert all(json.loads(line)["label"] for line in capsys.readouterr().out.splitlines())
    with pytest.raises(SystemExit) as stop:
        pipeline_main(["predict", str(calibrated_run), "--input", str(texts), "--min-score", "1.5"])
    assert stop.value.code == 2


def test_the_last_epochs_validation_pass_is_reused_for_calibration(module_project, monkeypatch):
    """After one epoch the final weights are the best ones and the loop has just predicted the
    validation split: calibration fits on those predictions (the same numbers, made once) and only
    the test split is predicted after training."""
    import finetune_pipeline.training.final_test as final_test
    from finetune_pipeline.training.metrics import predict

    _, train_run = module_project
    after_training = []
    monkeypatch.setattr(
        final_test, "predict", lambda model, loader, *a: after_training.append(loader) or predict(model, loader, *a)
    )
    run = train_run("reused", "training.epochs=1", "training.calibration_min_texts=0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(after_training) == 1 and len(after_training[0].dataset) == metrics["data"]["test"]
    calibration = metrics["calibration"]
    assert calibration["val_nll_before"] == pytest.approx(metrics["history"][-1]["val/loss"], abs=1e-5)
    assert torch.load(run / "final_model.pt", weights_only=True)["head"]["temperature"] == calibration["temperature"]
