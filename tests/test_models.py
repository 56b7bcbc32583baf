"""Every model config with every activation config, on tiny shapes, plus each contract.

Configs are read from ``configs/`` as the CLI composes them (a model YAML instantiated
with ``spec``/``act``/``dropout``; an activation YAML instantiated into a factory) and
shrunk through overrides so the whole matrix runs in seconds on two CPU cores.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from dlrun.data.spec import DataKind, DataSpec, Task
from dlrun.errors import UserError
from dlrun.models import build_model
from dlrun.models.family import ModelFamily, contract_problem, families
from dlrun.nn.activations import BinaryStep, Maxout, pieces
from dlrun.tasks import info, loss_fn

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N = 4  # batch size: BatchNorm needs more than one value per channel
T = 9  # sequence length
VOCAB = 7

SPECS: dict[str, DataSpec] = {
    "tab_multiclass": DataSpec("tab", Task.MULTICLASS, DataKind.TABULAR, (6,), 3),
    "tab_binary": DataSpec("tab", Task.BINARY, DataKind.TABULAR, (6,), 1),
    "tab_multilabel": DataSpec("tab", Task.MULTILABEL, DataKind.TABULAR, (6,), 4),
    "tab_regression": DataSpec("tab", Task.REGRESSION, DataKind.TABULAR, (6,), 2),
    "img_multiclass": DataSpec("img", Task.MULTICLASS, DataKind.IMAGE, (2, 12, 12), 3),
    "seq_multiclass": DataSpec("seq", Task.MULTICLASS, DataKind.SEQUENCE, (T, 2), 3),
    "seq_forecast": DataSpec("seq", Task.FORECAST, DataKind.SEQUENCE, (T, 2), 2),
    "tok_binary": DataSpec("tok", Task.BINARY, DataKind.TOKENS, (T,), 1, vocab_size=VOCAB),
    "tok_lm": DataSpec("tok", Task.LANGUAGE_MODEL, DataKind.TOKENS, (T,), VOCAB, vocab_size=VOCAB),
}

# Every family is found in configs/model/; each shrinks itself with its own ``tiny``.
FAMILIES: dict[str, type[ModelFamily]] = families()


def compatible(model: str, data: str) -> bool:
    """Whether ``model`` takes ``data`` by its declared contract (checked before building)."""
    try:
        FAMILIES[model].check(SPECS[data], model)
    except UserError:
        return False
    return True


COMPATIBLE: dict[str, list[str]] = {
    model: [data for data in SPECS if compatible(model, data)] for model in FAMILIES
}
ACTIVATIONS = [
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "swish",
    "gelu",
    "maxout",
]
PAIRS = [(model, data) for model, datas in COMPATIBLE.items() for data in datas]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP's
    waiting threads made single steps 50x slower; one thread keeps the file fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(group: str, name: str, **overrides: Any) -> dict[str, Any]:
    raw = OmegaConf.load(CONFIGS / group / f"{name}.yaml")
    raw.pop("defaults", None)  # Hydra's include of configs/transfer.yaml, not a model key
    cfg = OmegaConf.merge(raw, overrides)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def activation(name: str) -> Any:
    return instantiate(load("activation", name))


def make(
    model: str, data: str | DataSpec, act: str = "relu", dropout: float = 0.1, **overrides: Any
) -> nn.Module:
    """Build ``model`` for ``data`` the way the CLI does, shrunk; seeded."""
    spec = SPECS[data] if isinstance(data, str) else data
    torch.manual_seed(0)
    cfg = load("model", model, **{**FAMILIES[model].tiny, **overrides})
    return build_model(cfg, spec, activation(act), dropout, model)


def sample(spec: DataSpec, n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec.kind == DataKind.TOKENS:
        return torch.randint(0, spec.vocab_size, (n, *spec.input_shape), generator=g)
    return torch.randn(n, *spec.input_shape, generator=g)


def targets(spec: DataSpec, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if spec.task is Task.MULTICLASS:
        return torch.randint(0, spec.n_outputs, (n,), generator=g)
    if spec.task is Task.LANGUAGE_MODEL:
        return torch.randint(0, spec.vocab_size, (n, *spec.input_shape), generator=g)
    if spec.task is Task.BINARY:
        return torch.randint(0, 2, (n,), generator=g).float()
    if spec.task is Task.MULTILABEL:
        return torch.randint(0, 2, (n, spec.n_outputs), generator=g).float()
    return torch.randn(n, spec.n_outputs, generator=g)


def expected_shape(spec: DataSpec, n: int = N) -> tuple[int, ...]:
    if spec.task is Task.LANGUAGE_MODEL:
        return (n, spec.input_shape[0], spec.vocab_size)
    return (n, spec.n_outputs)


def forward_backward(model: nn.Module, spec: DataSpec, act: str) -> None:
    """One training step's forward and backward; checks shapes and gradients."""
    model.train()
    out = model(sample(spec))
    assert out.shape == expected_shape(spec)
    assert torch.isfinite(out).all()
    loss_fn(spec.task)(out, targets(spec)).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    unused = [name for name, g in grads.items() if g is None]
    assert not unused, f"parameters without a gradient: {unused}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    zero = [name for name, g in grads.items() if not g.any()]
    steps = any(isinstance(m, BinaryStep) for m in model.modules())
    if act == "step" and steps:  # the step's gradient is zero: layers before it can't learn
        assert zero, "binary step let a gradient through"
    else:
        assert len(zero) < len(grads)


def user_error(exc: BaseException | None) -> UserError | None:
    """The UserError in an exception's cause chain (Hydra wraps errors of targets)."""
    while exc is not None and not isinstance(exc, UserError):
        exc = exc.__cause__
    return exc


# -- the matrix --------------------------------------------------------------------------


def test_every_config_is_in_the_matrix() -> None:
    assert set(FAMILIES) == {p.stem for p in (CONFIGS / "model").glob("*.yaml")}
    assert {p.stem for p in (CONFIGS / "activation").glob("*.yaml")} == {*ACTIVATIONS, "softmax"}


@pytest.mark.parametrize("model", list(FAMILIES))
def test_every_family_honours_the_contract(model: str) -> None:
    """dlrun.models.family.ModelFamily, checked for each configs/model/*.yaml."""
    cls = FAMILIES[model]
    assert issubclass(cls, ModelFamily) and contract_problem(cls) is None
    options = set(load("model", model)) - {"_target_"}
    params = inspect.signature(cls.__init__).parameters
    assert options <= set(params), f"the YAML sets options __init__ lacks: {options - set(params)}"
    assert all(params[name].default is not inspect.Parameter.empty for name in options)
    assert set(cls.tiny) <= options, "tiny may only shrink options the YAML lists"
    # every kind it declares works for some spec, and a language-model spec iff per_token
    working = COMPATIBLE[model]
    assert {SPECS[data].kind for data in working} == set(cls.accepts)
    assert ("tok_lm" in working) is cls.per_token


def test_a_class_that_is_not_a_family_is_refused() -> None:
    with pytest.raises(UserError, match="not a dlrun model family"):
        build_model({"_target_": "torch.nn.Linear"}, SPECS["tab_binary"], nn.ReLU, 0.0, "x")
    with pytest.raises(TypeError, match="__init__ must start with spec, act, dropout"):

        class _Broken(ModelFamily):
            accepts = frozenset({DataKind.TABULAR})

            def __init__(self, spec: DataSpec, dropout: float = 0.0) -> None:
                super().__init__()


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize(("model", "data"), PAIRS, ids=[f"{m}-{d}" for m, d in PAIRS])
def test_forward_backward(model: str, data: str, act: str) -> None:
    forward_backward(make(model, data, act), SPECS[data], act)


VARIANTS = [
    ("mlp", "tab_multiclass", {"batch_norm": True}),
    ("resnet", "img_multiclass", {"depth": 50}),
    ("resnet", "img_multiclass", {"batch_norm": False}),
    ("resnet", "img_multiclass", {"skip": False}),
    ("resnet", "img_multiclass", {"depth": 50, "skip": False}),
    ("mlp", "tab_multilabel", {"softmax_outputs": True}),
    ("googlenet", "img_multiclass", {"stages": 3, "batch_norm": False}),
    ("alexnet", "img_multiclass", {"batch_norm": True}),
    ("cnn1d", "seq_forecast", {"pool": "mean", "batch_norm": True}),
    ("cnn1d", "tok_binary", {"pool": "last"}),
    ("lstm", "seq_multiclass", {"bidirectional": True}),
    ("gru", "img_multiclass", {"bidirectional": True, "num_layers": 1}),
    ("rnn", "tok_lm", {"tbptt_steps": 4}),
    ("gpt", "tok_binary", {"pos_encoding": "sinusoidal", "pool": "mean"}),
    ("gpt", "tok_lm", {"pos_encoding": "sinusoidal", "n_layer": 2}),
]


@pytest.mark.parametrize("act", ["relu", "maxout", "step"])
@pytest.mark.parametrize(
    ("model", "data", "overrides"), VARIANTS, ids=[f"{m}-{d}-{'-'.join(o)}" for m, d, o in VARIANTS]
)
def test_family_options(model: str, data: str, overrides: dict[str, Any], act: str) -> None:
    forward_backward(make(model, data, act, **overrides), SPECS[data], act)


@pytest.mark.parametrize("model", ["alexnet", "googlenet", "resnet", "separable"])
def test_large_images_take_the_original_stem(model: str) -> None:
    spec = DataSpec("big", Task.MULTILABEL, DataKind.IMAGE, (3, 64, 64), 2)
    forward_backward(make(model, spec), spec, "relu")


# -- pairings that must be refused -----------------------------------------------------

INCOMPATIBLE = [(m, d) for m in COMPATIBLE for d in SPECS if d not in COMPATIBLE[m]]


@pytest.mark.parametrize(("model", "data"), INCOMPATIBLE, ids=[f"{m}-{d}" for m, d in INCOMPATIBLE])
def test_incompatible_pairs_are_refused(model: str, data: str) -> None:
    with pytest.raises(UserError, match=f"model={model}|language modelling"):
        make(model, data)


@pytest.mark.parametrize(
    ("model", "spec", "overrides", "message"),
    [
        (
            "lenet",
            DataSpec("tiny", Task.MULTICLASS, DataKind.IMAGE, (1, 11, 11), 2),
            {},
            "at least 12x12",
        ),
        (
            "resnet",
            DataSpec("tiny", Task.MULTICLASS, DataKind.IMAGE, (1, 6, 6), 2),
            {},
            "at least 8x8",
        ),
        ("gpt", SPECS["tok_lm"], {"block_size": T - 1}, "block_size"),
        ("gpt", SPECS["tok_lm"], {"n_embd": 9}, "divisible"),
        ("lstm", SPECS["tok_lm"], {"bidirectional": True}, "bidirectional=false"),
        ("gru", SPECS["seq_forecast"], {"bidirectional": True, "tbptt_steps": 3}, "tbptt"),
        ("resnet", SPECS["img_multiclass"], {"depth": 20}, "depth 18, 34 or 50"),
        ("cnn1d", SPECS["seq_forecast"], {"kernel_size": 4}, "odd kernel_size"),
        ("cnn1d", SPECS["seq_forecast"], {"pool": "min"}, "pool max, mean, last"),
        ("gpt", SPECS["tok_lm"], {"pos_encoding": "rotary"}, "pos_encoding"),
        ("lenet", SPECS["img_multiclass"], {"pool": "median"}, "pool max, avg"),
        ("gru", DataSpec("novocab", Task.BINARY, DataKind.TOKENS, (T,), 1), {}, "vocabulary"),
        ("mlp", SPECS["tab_multiclass"], {"softmax_outputs": True}, "for multilabel data"),
    ],
)
def test_impossible_settings_are_refused(
    model: str, spec: DataSpec, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        make(model, spec, **overrides)


def test_softmax_is_refused_as_a_hidden_activation() -> None:
    with pytest.raises(Exception) as info:
        activation("softmax")
    err = user_error(info.value)
    assert err is not None and "output activation" in str(err)


# -- activations -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_configs_are_zero_arg_factories(name: str) -> None:
    factory = activation(name)
    first, second = factory(), factory()
    assert isinstance(first, nn.Module) and first is not second
    if name == "prelu":  # learned slope, fresh per layer
        assert first.weight is not second.weight


def test_binary_step_is_on_off_with_zero_gradient() -> None:
    x = torch.tensor([-2.0, -0.0, 0.5, 3.0], requires_grad=True)
    y = BinaryStep()(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad is not None and not x.grad.any()


def test_maxout_takes_the_max_of_each_group_of_pieces() -> None:
    x = torch.tensor([[1.0, 5.0, -1.0, -3.0, 2.0, 2.5]])
    assert Maxout(pieces=2)(x).tolist() == [[5.0, -1.0, 2.5]]
    assert Maxout(pieces=3)(x).tolist() == [[5.0, 2.5]]
    assert pieces(activation("maxout")) == 2 and pieces(activation("relu")) == 1


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_maxout_doubles_the_parameters_of_the_layer_it_follows() -> None:
    spec = SPECS["tab_multiclass"]
    relu = make("mlp", spec, "relu", hidden=[16])
    maxout = make("mlp", spec, "maxout", hidden=[16])
    layer = 6 * 16 + 16  # Linear(6, 16)
    assert n_params(relu.net[1][0]) == layer
    assert n_params(maxout.net[1][0]) == 2 * layer
    assert n_params(maxout) - n_params(relu) == layer  # only the layer before maxout grows
    lenet_relu = make("lenet", "img_multiclass", "relu")
    lenet_maxout = make("lenet", "img_multiclass", "maxout")
    assert n_params(lenet_maxout.features[0]) == 2 * n_params(lenet_relu.features[0])


def test_resnet_maxout_keeps_the_identity_path() -> None:
    """With maxout after the addition, a block whose residual is zero is the identity."""
    model = make("resnet", "img_multiclass", "maxout").eval()
    block = model.features[1]  # first residual block: identity shortcut
    for p in block.body[-1].parameters():  # last conv + norm -> residual pieces all 0
        nn.init.zeros_(p)
    x = torch.randn(N, 2, 12, 12)
    torch.testing.assert_close(block(x), x)


def test_resnet_without_skips_drops_the_identity_path() -> None:
    """A block whose residual is zero passes its input with the skip, nothing without."""
    x = torch.rand(N, 2, 12, 12)  # >= 0: ReLU passes it unchanged
    out = {}
    for skip in (True, False):
        block = make("resnet", "img_multiclass", skip=skip).eval().features[1]
        for p in block.body[-1].parameters():
            nn.init.zeros_(p)
        out[skip] = block(x)
    torch.testing.assert_close(out[True], x)
    assert not out[False].any()


def _first_over_last_gradient(skip: bool) -> float:
    from dlrun.diagnostics.recorders import weight_layers

    spec = DataSpec("img", Task.MULTICLASS, DataKind.IMAGE, (1, 8, 8), 3)
    model = make("resnet", spec, depth=34, batch_norm=False, skip=skip)
    loss_fn(spec.task)(model(sample(spec)), targets(spec)).backward()
    norms = [sum(float(p.grad.norm()) ** 2 for p in ps) ** 0.5 for _, ps in weight_layers(model)]
    return norms[0] / norms[-1]


def test_resnet_skips_carry_the_gradient_to_the_first_layer() -> None:
    """34 layers without normalisation: through the plain net the first layer's gradient
    (relative to the last's) vanishes; the shortcuts carry it back."""
    residual, plain = _first_over_last_gradient(True), _first_over_last_gradient(False)
    assert residual > 1e-4 and plain < residual / 100


def test_resnet_without_skips_loses_only_the_projection_shortcuts() -> None:
    count = {s: sum(p.numel() for p in make("resnet", "img_multiclass", skip=s).parameters())
             for s in (True, False)}  # fmt: skip
    plain = make("resnet", "img_multiclass", skip=False)
    assert all(b.shortcut is None for b in plain.features if hasattr(b, "body"))
    blocks = [b for b in make("resnet", "img_multiclass").features if hasattr(b, "shortcut")]
    projections = [b.shortcut for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 3  # the three downsampling blocks of depth 18
    assert count[True] - count[False] == sum(p.numel() for m in projections for p in m.parameters())


def test_mlp_softmax_outputs_sum_to_one_over_the_labels() -> None:
    """Read through the multilabel task's sigmoid, the outputs are a softmax: at most one
    label passes 0.5, which is what the softmax-vs-sigmoid lesson shows."""
    spec = SPECS["tab_multilabel"]
    model = make("mlp", spec, softmax_outputs=True).double().eval()
    probs = info(spec.task).activate(model(sample(spec).double() * 50))
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(N, dtype=torch.float64))
    assert ((probs > 0.5).sum(dim=-1) <= 1).all()
    plain = info(spec.task).activate(make("mlp", spec).double()(sample(spec).double()))
    assert not torch.allclose(plain.sum(dim=-1), torch.ones(N, dtype=torch.float64))


@pytest.mark.parametrize(
    ("act", "recurrence"), [("tanh", "tanh"), ("relu", "relu"), ("gelu", "tanh"), ("step", "tanh")]
)
def test_vanilla_rnn_recurrence(act: str, recurrence: str) -> None:
    model = make("rnn", "seq_forecast", act)
    assert model.recurrence == recurrence == model.core.nonlinearity


# -- sequences: tbptt and padding ------------------------------------------------------


def _grad_per_step(m: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None):
    """The output, and |d sum(output) / d input| summed per sample and step: (N, T)."""
    x = x.clone().requires_grad_(True)
    out = m(x) if lengths is None else m(x, lengths)
    out.sum().backward()
    return out.detach(), x.grad.abs().sum(dim=2)


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_tbptt_gives_the_loss_bearing_end_a_full_window(model: str) -> None:
    # The case: sequence -> vector, T=32, tbptt_steps=10. Chunks counted from the
    # start left the output a 2-step window (steps 30-31); the last 10 steps must get it.
    spec = DataSpec("seq", Task.FORECAST, DataKind.SEQUENCE, (32, 2), 1)
    full = make(model, spec, "tanh", dropout=0.0).eval()
    chunked = make(model, spec, "tanh", dropout=0.0, tbptt_steps=10).eval()
    chunked.load_state_dict(full.state_dict())
    x = sample(spec)
    out_full, grad_full = _grad_per_step(full, x)
    out_chunked, grad_chunked = _grad_per_step(chunked, x)
    torch.testing.assert_close(out_chunked, out_full)  # forward values of one pass
    assert (grad_full > 0).all()  # full BPTT reaches step 0
    assert not grad_chunked[:, :22].any() and (grad_chunked[:, 22:] > 0).all()
    # Padded batch: each sequence gets the 10 steps before its own end, and the
    # forward values are still those of one pass over that sequence.
    lengths = torch.tensor([32, 25, 7, 16])
    out_padded, grad_padded = _grad_per_step(chunked, x, lengths)
    for i, n in enumerate(lengths.tolist()):
        receives = (grad_padded[i] > 0).nonzero().flatten().tolist()
        assert receives == list(range(max(n - 10, 0), n)), (n, receives)
        with torch.no_grad():
            torch.testing.assert_close(out_padded[i], full(x[i : i + 1, :n])[0])


def test_tbptt_for_language_models_leaves_only_the_first_chunk_short() -> None:
    # Per-step outputs: T=9, chunks of 4 counted from the end -> [0], [1-4], [5-8]; the
    # output at step 8 reaches back to step 5 and no further.
    spec = SPECS["tok_lm"]
    net = make("rnn", spec, "tanh", dropout=0.0, tbptt_steps=4).eval()
    h = net.inputs(sample(spec)).detach().requires_grad_(True)
    out = net._run(h, None)
    out[:, 8].sum().backward()
    receives = (h.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten().tolist()
    assert receives == [5, 6, 7, 8]


# Every family that reads sequences, on each padded spec it takes, plus option variants.
LENGTH_CASES = [
    (model, data, {})
    for model, datas in COMPATIBLE.items()
    for data in datas
    if SPECS[data].kind in (DataKind.SEQUENCE, DataKind.TOKENS) and data != "tok_lm"
] + [
    ("cnn1d", "tok_binary", {"pool": "mean"}),
    ("gru", "seq_forecast", {"tbptt_steps": 3}),
    ("lstm", "seq_multiclass", {"bidirectional": True}),
    ("gru", "tok_binary", {"bidirectional": True}),
    ("gpt", "tok_binary", {"pool": "mean"}),
]


@pytest.mark.parametrize(
    ("model", "data", "overrides"),
    LENGTH_CASES,
    ids=[f"{m}-{d}-{'-'.join(o)}" for m, d, o in LENGTH_CASES],
)
def test_padding_is_ignored(model: str, data: str, overrides: dict[str, Any]) -> None:
    spec = SPECS[data]
    net = make(model, data, **overrides).eval()
    lengths = torch.tensor([T, 5, 2, 7])
    x, noise = sample(spec, seed=0), sample(spec, seed=1)
    pad = torch.arange(T) >= lengths.unsqueeze(1)  # (N, T)
    if x.dim() == 3:
        pad = pad.unsqueeze(-1)
    x_other = torch.where(pad, noise, x)  # same sequences, different padding
    with torch.no_grad():
        out = net(x, lengths)
        torch.testing.assert_close(net(x_other, lengths), out)
        if DataKind.TABULAR in FAMILIES[model].accepts:  # it flattens: a fixed input size
            return
        alone = net(x[1:2, :5])  # the length-5 sequence without any padding
    torch.testing.assert_close(out[1:2], alone)


# -- gpt generation ----------------------------------------------------------------------


def test_gpt_generate_greedy_is_deterministic_and_respects_max_new_tokens() -> None:
    model = make("gpt", "tok_lm")  # block_size 16
    start = torch.tensor([[1, 2, 3], [4, 5, 6]])
    first = model.generate(start, max_new_tokens=20, temperature=0)
    second = model.generate(start, max_new_tokens=20, temperature=0)
    assert first.shape == (2, 23)  # longer than block_size: the context is cropped
    assert torch.equal(first, second)
    assert torch.equal(first[:, :3], start)
    assert int(first.max()) < VOCAB
    assert model.training  # generate runs in eval mode and restores the mode
    top1 = model.generate(start, 5, temperature=0.7, top_k=1)
    assert torch.equal(top1, first[:, :8])  # top_k=1 sampling is greedy


def test_gpt_sampling_is_seeded_and_lm_head_is_tied() -> None:
    model = make("gpt", "tok_lm")
    start = torch.zeros(1, 1, dtype=torch.long)
    draws = [
        model.generate(start, 10, top_k=3, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1])
    assert model.head.weight is model.wte.weight
    with pytest.raises(UserError):
        make("gpt", "tok_binary").generate(start, 1)
