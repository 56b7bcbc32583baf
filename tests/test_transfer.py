"""Transfer learning: model.init_from, model.freeze, model.pretrained_lr, and its payoff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SHRINK, compose_cfg, load_script, train_run
from tests.test_models import SPECS, make


@pytest.mark.parametrize(
    ("family", "data", "head"),
    [
        ("mlp", "tab_multiclass", "net.3"),  # the whole net is one block: its output layer
        ("lenet", "img_multiclass", "head"),
        ("alexnet", "img_multiclass", "classifier"),
        ("googlenet", "img_multiclass", "classifier"),
        ("resnet", "img_multiclass", "fc"),
        ("separable", "img_multiclass", "classifier"),
        ("cnn1d", "seq_multiclass", "head"),
        ("lstm", "seq_multiclass", "head"),
        ("gpt", "tok_binary", "head"),
    ],
)
def test_the_head_of_every_family(family: str, data: str, head: str) -> None:
    from dlrun.transfer import head_of

    assert head_of(make(family, data)) == head


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.freeze=backbone"], "need model.init_from"),
        (["model.pretrained_lr=0.1"], "need model.init_from"),
        (["model.init_from=/no/such/run"], "no checkpoint there"),
        (["model.freeze=everything"], "model.freeze='everything' is invalid"),
        (["model.pretrained_lr=0"], "must be a number > 0"),
    ],
)
def test_transfer_settings_are_checked_before_anything_runs(overrides, message) -> None:
    from dlrun.config import validate
    from dlrun.errors import UserError

    with pytest.raises(UserError, match=message):
        validate(compose_cfg(*overrides))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 pretrained (briefly) on the digits 0-4."""
    run_dir = tmp_path_factory.mktemp("transfer") / "pretrain"
    train_run(run_dir, "experiment=digits04_pretrain", "trainer.epochs=3",
              "regularization=none", "trainer.num_threads=1")  # fmt: skip
    return run_dir


def _target(classes: str) -> tuple[torch.nn.Module, object]:
    from dlrun.data.sklearn_sets import load_digits_images
    from dlrun.models.lenet import LeNet5

    bundle = load_digits_images(0, classes=json.loads(classes), train_per_class=3)
    torch.manual_seed(1)
    return LeNet5(bundle.spec, torch.nn.ReLU), bundle.spec


def test_matching_layers_load_and_other_classes_get_a_new_head(source: Path) -> None:
    from dlrun.transfer import load_matching

    saved = torch.load(source / "checkpoints" / "best.pt", weights_only=True)["model"]
    model, spec = _target("[5, 6, 7, 8, 9]")
    fresh = model.head[2].weight.clone()
    loaded, lines = load_matching(model, spec, str(source), "head")
    assert {n for n in saved if n.startswith("features.")} <= loaded
    assert not any(n.startswith("head.") for n in loaded)  # same shapes, other classes
    assert torch.equal(model.features[0].weight, saved["features.0.weight"])
    assert torch.equal(model.head[2].weight, fresh)
    assert any("new head head: classes 0,1,2,3,4 -> 5,6,7,8,9" in line for line in lines)
    same, _ = _target("[0, 1, 2, 3, 4]")
    loaded_same, _ = load_matching(same, _target("[0, 1, 2, 3, 4]")[1], str(source), "head")
    assert loaded_same == set(saved)  # the same classes: the head is kept


def test_freeze_modes_and_learning_rate_groups() -> None:
    from dlrun.transfer import freeze, head_of, param_groups

    model = make("resnet", "img_multiclass")
    head = head_of(model)
    loaded = {n for n in model.state_dict() if not n.startswith(head)}
    frozen = freeze(model, "backbone", loaded, head)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("fc.") for n in trainable)
    assert frozen == {n for n, _ in model.named_parameters()} - trainable
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(4, *SPECS["img_multiclass"].input_shape))
    assert torch.equal(bn.running_mean, before)  # a frozen BatchNorm keeps its statistics
    other = make("resnet", "img_multiclass")
    groups = param_groups(other, loaded, 0.1, 0.01)
    assert groups[1]["lr"] == pytest.approx(0.001) and "lr" not in groups[0]
    assert sum(len(g["params"]) for g in groups) == len(list(other.parameters()))


def test_fine_tuning_beats_scratch_on_a_small_case(source: Path, tmp_path: Path) -> None:
    """Digits 5-9 from 3 images per class, 10 epochs: the pretrained base pays off."""
    common = ["experiment=transfer_digits", "data.train_per_class=3", "trainer.num_threads=1"]
    scratch = train_run(tmp_path / "scratch", *common)["test"]["accuracy"]
    tuned = train_run(tmp_path / "tuned", *common, f"model.init_from={source}")
    assert tuned["test"]["accuracy"] > scratch + 0.05
    record = json.loads((tmp_path / "tuned" / "transfer.json").read_text())
    assert record["head"] == "head" and "features.0.weight" in record["loaded"]


def test_freezing_trains_the_new_layers_only(source: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "frozen"
    train_run(run_dir, "experiment=transfer_digits", *SHRINK, f"model.init_from={source}",
              "model.freeze=backbone")  # fmt: skip
    before = torch.load(source / "checkpoints" / "best.pt", weights_only=True)["model"]
    after = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(before["features.0.weight"], after["features.0.weight"])
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])


@pytest.mark.slow
def test_the_ready_transfer_experiment_pays_off_over_seeds(tmp_path: Path) -> None:
    module = load_script("transfer")
    results = module.experiment(tmp_path, seeds=5, per_class=5, epochs=10, pretrain_epochs=30)
    mean = {arm: sum(v) / len(v) for arm, v in results.items()}
    assert mean["fine-tune"] > mean["scratch"] + 0.03  # the README's table: +0.050, +0.046
    assert mean["feature extraction"] > mean["scratch"] + 0.03
