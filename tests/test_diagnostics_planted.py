"""Each condition planted in a real model and training run; the verdict must name it.

The runs train through dlrun's Trainer with the diagnostics recorders attached, then
hand what was recorded to the verdict functions, as a run does after its evaluation.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from dlrun import tasks
from dlrun.data.sklearn_sets import load_digits_flat
from dlrun.data.spec import DataBundle
from dlrun.diagnostics import verdicts
from dlrun.diagnostics.recorders import (
    ActivationHealth,
    GradientNorms,
    activation_health,
    unit_axes,
    weight_layers,
)
from dlrun.diagnostics.remedies import Facts
from dlrun.engine.callbacks import Callback
from dlrun.engine.trainer import FitState, Trainer, TrainerSettings
from dlrun.models.mlp import MLP
from dlrun.models.resnet import ResNet

BASELINE = {"accuracy": 0.1}  # ten balanced digit classes


@functools.cache
def digits() -> DataBundle:
    return load_digits_flat(seed=0)


def small_digits(n_train: int) -> DataBundle:
    """Digits with only ``n_train`` training rows: easy to memorise, hard to generalise."""
    bundle = digits()
    return DataBundle(
        bundle.spec, bundle.train.subset(torch.arange(n_train)), bundle.val, bundle.test
    )


def train(
    model: nn.Module,
    bundle: DataBundle,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    every: int = 1,
    limit: int | None = None,
) -> tuple[FitState, GradientNorms, ActivationHealth]:
    grads, acts = GradientNorms(every), ActivationHealth()
    settings = TrainerSettings(epochs=epochs, batch_size=32, limit_batches=limit)
    loss = tasks.loss_fn(bundle.spec.task)
    trainer = Trainer(model, bundle, optimizer, loss, settings, callbacks=[grads, acts])
    return trainer.fit(), grads, acts


def mlp(hidden: tuple[int, ...], act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(digits().spec, act=act, hidden=hidden)


def test_a_model_made_to_overfit_is_called_overfitting_with_the_epoch_it_began():
    model = mlp((128, 128))
    state, _, _ = train(model, small_digits(96), torch.optim.Adam(model.parameters(), 3e-3), 20)
    fit = verdicts.fit_verdict(state.history, "accuracy", True, BASELINE, Facts())
    assert fit["verdict"] == "overfitting", fit
    best = min(state.history, key=lambda r: r["val_loss"])["epoch"]
    assert fit["began_epoch"] == best + 1
    assert state.history[-1]["accuracy"] == 1.0  # it memorised the 96 rows


def test_a_20_layer_sigmoid_mlp_has_vanishing_gradients():
    model = mlp((32,) * 20, nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    _, grads, _ = train(model, digits(), opt, epochs=1, limit=4)
    result = verdicts.gradient_verdict(grads.result(), Facts(activation="sigmoid"))
    assert result["verdict"] == "vanishing", result
    assert result["ratio"] < 1e-6  # 0.25 per sigmoid, 20 times over
    assert result["remedies"][0]["overrides"] == "activation=relu"
    assert len(result["layers"]) == 21  # every Linear, input to output


def test_a_too_high_learning_rate_is_unstable():
    model = mlp(())  # softmax regression: no unit can die, the loss can only swing
    opt = torch.optim.SGD(model.parameters(), lr=30.0)
    state, _, _ = train(model, digits(), opt, epochs=6, limit=10)
    fit = verdicts.fit_verdict(state.history, "accuracy", True, BASELINE, Facts(lr=30.0))
    assert fit["verdict"] == "unstable", fit
    assert fit["remedies"][0]["overrides"] == "optimizer.lr=3"


def test_a_relu_network_pushed_to_die_is_dying_relu():
    model = mlp((64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=3.0)  # huge steps push units below 0
    _, _, acts = train(model, digits(), opt, epochs=1, limit=10)
    result = verdicts.activation_verdict(acts.after, acts.before, Facts())
    assert result["verdict"] == "dying ReLU", result
    worst = max(r["never_active"] for r in result["layers"])
    assert worst >= 0.5
    assert all(r.get("never_active_at_start", 0) < 0.2 for r in result["layers"])


def test_leaky_relu_at_the_same_lr_cannot_die():
    model = mlp((64, 64), nn.LeakyReLU)
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    _, _, acts = train(model, digits(), opt, epochs=1, limit=10)
    assert verdicts.activation_verdict(acts.after, acts.before, Facts())["verdict"] == "healthy"


def test_gradient_norms_stay_on_the_device_until_the_epoch_ends():
    """No host sync in the hot path: samples queue as device tensors and are read once
    per epoch; one sample every ``every`` optimizer steps, the first included."""
    seen: list[tuple[int, int]] = []

    class Probe(Callback):
        def on_batch_end(self, trainer, state, batch, loss):  # type: ignore[override]
            seen.append((len(grads.steps), len(grads._pending)))

    grads = GradientNorms(every_n_steps=3)
    model = mlp((16,))
    bundle = digits()
    settings = TrainerSettings(epochs=2, batch_size=32, limit_batches=7)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    trainer = Trainer(model, bundle, opt, tasks.loss_fn(bundle.spec.task), settings,
                      callbacks=[grads, Probe()])  # fmt: skip
    trainer.fit()
    assert [read for read, _ in seen[:7]] == [0] * 7  # nothing read during epoch 1
    assert [pending for _, pending in seen[:7]] == [1, 1, 1, 2, 2, 2, 3]
    assert grads.steps == [0, 3, 6, 9, 12]
    assert len(grads.norms[0]) == len(grads.layers) == 2


def test_gradient_norms_survive_a_checkpoint():
    grads = GradientNorms(5)
    grads.layers, grads.steps, grads.norms = ["a"], [0, 5], [[1.0], [0.5]]
    again = GradientNorms(5)
    again.load_state_dict(grads.state_dict())
    assert (again.steps, again.norms) == ([0, 5], [[1.0], [0.5]])


def test_weight_layers_skip_norms_and_count_a_shared_tensor_once():
    from dlrun.data.sklearn_sets import load_digits_images

    torch.manual_seed(0)
    model = ResNet(load_digits_images(seed=0).spec, depth=18, width=4)
    modules = dict(model.named_modules())
    kinds = {type(modules[name]) for name, _ in weight_layers(model)}
    assert kinds == {nn.Conv2d, nn.Linear}  # no BatchNorm
    shared = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    shared[1].weight = shared[0].weight
    assert [name for name, _ in weight_layers(shared)] == ["0"]  # the tied matrix once


def test_units_are_channels_after_a_conv_and_features_after_a_linear():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3), nn.Tanh())
    axes = {name: axis for name, axis in unit_axes(model).values()}
    assert axes == {"1": 1, "4": -1}


def test_dead_and_saturated_units_are_counted_on_the_split():
    torch.manual_seed(0)
    dead = nn.Linear(64, 8)
    nn.init.constant_(dead.bias, -1e3)  # never above 0 for digits' pixel values
    sat = nn.Linear(8, 4)
    nn.init.constant_(sat.weight, 0.0)
    nn.init.constant_(sat.bias, 50.0)  # sigmoid(50) = 1: flat on every sample
    model = nn.Sequential(dead, nn.ReLU(), sat, nn.Sigmoid())
    rows = activation_health(model, digits().val, max_samples=100)
    assert rows[0]["never_active"] == 1.0 and rows[0]["units"] == 8
    assert rows[1]["saturated"] == 1.0 and rows[1]["units"] == 4


def test_the_activation_check_reads_fewer_rows_for_a_short_run():
    """Two passes over 3% of what the run trains on, between 64 rows and ``max_samples``:
    a one-batch run reads 64, a 5-epoch run of 10 batches of 64 reads 96, the default
    run (20 epochs of the digits' training split) reads the configured 512."""
    bundle = digits()
    model = mlp((16,))
    n_train = len(bundle.train)

    def rows(epochs: int, batch: int, limit: int | None) -> int:
        settings = TrainerSettings(epochs=epochs, batch_size=batch, limit_batches=limit)
        opt = torch.optim.SGD(model.parameters(), 0.1)
        trainer = Trainer(model, bundle, opt, tasks.loss_fn(bundle.spec.task), settings)
        return ActivationHealth(512).rows(trainer)

    assert rows(1, 32, 1) == 64
    assert rows(5, 64, 10) == 96
    assert rows(20, 32, None) == 512 < int(0.03 * 20 * n_train)
    assert rows(3, 32, None) == int(0.03 * 3 * n_train)  # partial last batch: n_train, not more


def test_the_activation_check_reads_the_rows_it_is_given_not_whole_batches():
    bundle = digits()
    model = mlp((16,))
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    for rows, batch, expected in ((96, 256, [96]), (200, 128, [100, 100]), (900, 256, [135, 135])):
        seen.clear()
        activation_health(model, bundle.val, rows, batch)
        assert seen == expected
