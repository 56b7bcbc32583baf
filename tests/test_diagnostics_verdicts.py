"""The verdicts as pure functions: each condition planted as a few numbers."""

from __future__ import annotations

import math

import pytest

from dlrun.diagnostics import remedies, verdicts
from dlrun.diagnostics.remedies import Facts

FACTS = Facts(
    model="mlp",
    activation="sigmoid",
    regularization="light",
    lr=0.002,
    epochs=20,
    batch_size=32,
    dropout=0.1,
    model_cfg={"hidden": [128, 64], "batch_norm": False},
    overrides=("model=mlp", "data=digits_flat", "optimizer.lr=0.002"),
)
BASELINE = {"accuracy": 0.1, "loss": 2.3}


def rows(loss, val_loss, acc=None, val_acc=None):
    """History rows from columns (accuracy defaults to something healthy)."""
    n = len(loss)
    acc = acc or [0.9] * n
    val_acc = val_acc or [0.9] * n
    return [
        {"epoch": i + 1, "loss": loss[i], "accuracy": acc[i], "val_loss": val_loss[i],
         "val_accuracy": val_acc[i], "lr": 0.001, "seconds": 0.1}
        for i in range(n)
    ]  # fmt: skip


def fit(history, baseline=BASELINE, comparison=None):
    return verdicts.fit_verdict(history, "accuracy", True, baseline, FACTS, comparison)


def test_overfitting_names_the_epoch_it_began_and_the_notes_remedies():
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03]
    val = [1.0, 0.7, 0.5, 0.45, 0.47, 0.5, 0.55, 0.6, 0.66, 0.7]
    result = fit(rows(train, val))
    assert result["verdict"] == "overfitting"
    assert result["began_epoch"] == 5
    assert "epoch 5" in result["message"]
    whys = [r["why"] for r in result["remedies"]]
    assert whys[0].startswith("more training data")  # the notes' order
    changes = [r["overrides"] for r in result["remedies"]]
    assert "regularization=l2" in changes
    assert "model.hidden=[64,32]" in changes  # a smaller model, in the run's own key
    assert "regularization=early_stopping" in changes
    l2 = next(r for r in result["remedies"] if r["overrides"] == "regularization=l2")
    assert l2["command"] == "dlrun model=mlp data=digits_flat optimizer.lr=0.002 regularization=l2"


def test_validation_that_keeps_improving_is_not_overfitting():
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03]
    val = [1.0, 0.7, 0.5, 0.45, 0.44, 0.43, 0.425, 0.424, 0.423, 0.4229]
    assert fit(rows(train, val))["verdict"] == "good fit"


def test_underfitting_when_train_and_val_are_both_poor_against_the_baseline():
    loss = [2.3, 2.25, 2.2, 2.2, 2.19]
    history = rows(loss, loss, acc=[0.1, 0.12, 0.14, 0.15, 0.16], val_acc=[0.1, 0.11] + [0.12] * 3)
    result = fit(history, comparison={"verdict": "indistinguishable"})
    assert result["verdict"] == "underfitting"
    assert "0.16" in result["message"] and "0.1" in result["message"]
    changes = [r["overrides"] for r in result["remedies"]]
    assert "model.hidden=[256,128]" in changes  # a bigger model
    assert "regularization=none" in changes  # remove regularization
    assert "activation=relu" in changes  # sigmoid: a non-vanishing activation


def test_a_model_that_beats_the_baseline_well_is_not_underfitting():
    loss = [1.0, 0.5, 0.3, 0.25, 0.24]
    history = rows(loss, loss, acc=[0.5, 0.8, 0.9, 0.95, 0.96], val_acc=[0.5, 0.8, 0.9, 0.93, 0.94])
    assert fit(history, comparison={"verdict": "better"})["verdict"] != "underfitting"


def test_regression_gains_are_judged_on_squared_error():
    # rmse 50 against a baseline of 70: half the baseline's MSE, not "poor"
    assert verdicts.gain(50.0, 70.0, higher_is_better=False) == pytest.approx(1 - (50 / 70) ** 2)
    assert verdicts.gain(0.55, 0.1, higher_is_better=True) == pytest.approx(0.5)


def test_still_improving_at_the_last_epoch_is_not_converged():
    loss = [2.0, 1.5, 1.2, 1.0, 0.8, 0.65]
    result = fit(rows(loss, [x + 0.05 for x in loss]))
    assert result["verdict"] == "not converged"
    assert result["remedies"][0]["overrides"] == "trainer.epochs=40"


def test_an_oscillating_training_loss_is_unstable_with_a_lower_lr_first():
    loss = [1.0, 0.6, 0.9, 0.5, 0.8, 0.45, 0.85, 0.5]
    result = fit(rows(loss, loss))
    assert result["verdict"] == "unstable"
    assert "rose in 3 of 7 epochs" in result["message"]
    assert result["remedies"][0]["overrides"] == "optimizer.lr=0.0002"
    assert "trainer.grad_clip=1.0" in [r["overrides"] for r in result["remedies"]]


def test_a_single_spike_is_unstable():
    loss = [1.0, 0.6, 0.4, 3.0, 0.5, 0.35]
    result = fit(rows(loss, loss))
    assert result["verdict"] == "unstable"
    assert "epoch 4" in result["message"]


def test_too_few_epochs_give_no_fit_verdict():
    assert fit(rows([1.0, 0.5], [1.0, 0.5]))["verdict"] == "n/a"


def grads(norms, layers=("l1", "l2", "l3")):
    return {"layers": list(layers), "steps": list(range(0, 25 * len(norms), 25)),
            "norms": norms, "every_n_steps": 25}  # fmt: skip


def test_vanishing_gradients_orders_of_magnitude_below_the_last_layer():
    result = verdicts.gradient_verdict(grads([[1e-6, 1e-3, 0.5]] * 10), FACTS)
    assert result["verdict"] == "vanishing"
    assert "5.7 orders of magnitude" in result["message"]
    changes = [r["overrides"] for r in result["remedies"]]
    assert changes[:1] == ["activation=relu"]
    assert "model.batch_norm=true" in changes  # normalisation, where the model has it


def test_exactly_zero_gradient_is_named():
    result = verdicts.gradient_verdict(grads([[0.0, 0.0, 0.5]] * 4), FACTS)
    assert result["verdict"] == "vanishing"
    assert "no gradient reaches l1, l2" in result["message"]


def test_a_spike_against_the_recent_past_is_exploding():
    norms = [[0.1, 0.1, 0.1]] * 6 + [[5.0, 5.0, 5.0]] + [[0.1, 0.1, 0.1]] * 3
    result = verdicts.gradient_verdict(grads(norms), FACTS)
    assert result["verdict"] == "exploding"
    assert "step 150" in result["message"]
    assert result["remedies"][0]["overrides"] == "trainer.grad_clip=1.0"


def test_gradients_that_shrink_as_the_loss_falls_are_healthy():
    norms = [[v, v, v] for v in (1.0, 0.5, 0.2, 0.05, 0.01, 0.005, 0.003, 0.002, 0.004)]
    assert verdicts.gradient_verdict(grads(norms), FACTS)["verdict"] == "healthy"


def test_a_non_finite_gradient_norm_is_exploding():
    norms = [[0.1, 0.1, 0.1], [math.inf, 0.1, 0.1]]
    assert verdicts.gradient_verdict(grads(norms), FACTS)["verdict"] == "exploding"


def test_dying_relu_and_saturation_from_activation_rows():
    after = [
        {"layer": "net.1.1", "kind": "ReLU", "units": 64, "never_active": 0.7},
        {"layer": "net.2.1", "kind": "LeakyReLU", "units": 64, "never_active": 0.9},
    ]
    before = [{"layer": "net.1.1", "kind": "ReLU", "units": 64, "never_active": 0.0}]
    result = verdicts.activation_verdict(after, before, FACTS)
    assert result["verdict"] == "dying ReLU"
    assert "70% of net.1.1's 64 units never activate" in result["message"]
    assert "(0% at initialisation)" in result["message"]
    assert [r["overrides"] for r in result["remedies"]][:2] == [
        "activation=leaky_relu", "activation=prelu",
    ]  # fmt: skip
    sat = [{"layer": "net.1.1", "kind": "Sigmoid", "units": 32, "saturated": 0.5}]
    assert verdicts.activation_verdict(sat, None, FACTS)["verdict"] == "saturated"
    leaky_only = after[1:]  # the leaky family passes gradient: never "dead"
    assert verdicts.activation_verdict(leaky_only, None, FACTS)["verdict"] == "healthy"


def test_merge_overrides_replaces_keys_and_drops_hydra_and_resume():
    merged = remedies.merge_overrides(
        ["model=mlp", "optimizer.lr=0.1", "hydra.run.dir=x", "resume=y"],
        ["optimizer.lr=0.01", "trainer.grad_clip=1.0"],
    )
    assert merged == ["model=mlp", "optimizer.lr=0.01", "trainer.grad_clip=1.0"]


def test_capacity_scales_the_models_own_key():
    assert remedies.capacity(Facts(model_cfg={"hidden_size": 64}), 2) == "model.hidden_size=128"
    assert remedies.capacity(Facts(model_cfg={"width": 0.25}), 2) == "model.width=0.5"
    assert remedies.capacity(Facts(model_cfg={"depth": 18}), 2) is None
    assert remedies.scaled_lr(Facts(lr=0.003), 0.1) == "optimizer.lr=0.0003"
