"""dlrun-gradcheck: backprop against central differences, per parameter tensor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlrun.diagnostics.command import compose_run_config
from dlrun.diagnostics.gradcheck import check_gradients, format_results, gradcheck_run
from dlrun.models.family import families
from dlrun.tasks import loss_fn
from tests.test_models import COMPATIBLE, SPECS, make, sample, targets


class _WrongBackward(torch.autograd.Function):
    """x**2 whose backward forgets the factor 2: the bug gradient checking exists for."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * x


class _Square(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)


def _net(op) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), _Square(op), nn.Linear(4, 2)).double()


def _loss_of(x: torch.Tensor, y: torch.Tensor):
    return lambda m: nn.functional.cross_entropy(m(x), y)


def test_a_deliberately_broken_custom_op_fails_and_names_the_tensors_before_it():
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.tensor([0, 1, 1])
    results = check_gradients(_net(_WrongBackward.apply), _loss_of(x, y))
    failed = {r.name for r in results if not r.passed}
    assert failed == {"0.weight", "0.bias"}  # the layer behind the broken op, not after it
    assert "FAILED: 2 of 4 tensors" in format_results(results)


def test_the_same_network_with_a_correct_op_passes():
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.tensor([0, 1, 1])
    results = check_gradients(_net(lambda t: t * t), _loss_of(x, y))
    assert all(r.passed for r in results), format_results(results)
    assert format_results(results).endswith("every relative error <= 1e-03")


def test_a_detached_layer_fails_instead_of_being_skipped():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).detach() + 0.1 * self.a(x) ** 2)

    torch.manual_seed(0)
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.tensor([0, 1, 1])
    results = check_gradients(Detached().double(), _loss_of(x, y))
    assert not all(r.passed for r in results if r.name.startswith("a."))


SLOW = pytest.mark.slow  # a few seconds each alone, far more on a loaded machine
FAMILIES = [
    ("model=mlp", "data=digits_flat"),
    ("model=lenet",),
    ("model=rnn", "data=sine"),
    pytest.param(("model=alexnet", "model.channels=[4,4,4,4,4]", "model.fc=[8,8]"), marks=SLOW),
    pytest.param(("model=resnet", "model.width=4"), marks=SLOW),
    pytest.param(("model=googlenet",), marks=SLOW),
    pytest.param(("model=separable",), marks=SLOW),
    pytest.param(("model=cnn1d", "data=waveforms", "model.channels=[8,8]"), marks=SLOW),
    pytest.param(("model=lstm", "data=sine"), marks=SLOW),
    pytest.param(("model=gru", "data=waveforms"), marks=SLOW),
    pytest.param(
        ("model=gpt", "data=text", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"),
        marks=SLOW,
    ),
]


@pytest.mark.parametrize("overrides", FAMILIES, ids=lambda o: o[0])
def test_every_model_family_passes(overrides):
    cfg, names = compose_run_config(list(overrides))
    results = gradcheck_run(cfg, 2, 3, 1e-6, 0, names.model_name)
    assert results and all(r.passed for r in results), format_results(results)


@pytest.fixture
def one_thread():
    """Tiny float64 tensors gain nothing from threads; on a busy machine they stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", sorted(families()))
def test_every_family_in_configs_passes_gradcheck_on_tiny_shapes(family: str) -> None:
    """The README's "every model family passes", for each ``configs/model/*.yaml`` found:
    the family shrunk by its own ``tiny``, on its first compatible data kind, float64."""
    data = COMPATIBLE[family][0]
    spec = SPECS[data]
    model = make(family, data, "tanh").double().eval()  # smooth: no kinks to skip
    x = sample(spec)
    x = x.double() if x.is_floating_point() else x
    y = targets(spec)
    y = y.double() if y.is_floating_point() else y
    results = check_gradients(model, lambda m: loss_fn(spec.task)(m(x), y), entries=4)
    assert results and all(r.passed for r in results), format_results(results)
