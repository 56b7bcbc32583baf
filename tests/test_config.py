"""Every config composes; the schema and validator reject bad values by name."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from dlrun.config import metric_mode, validate
from dlrun.errors import UserError
from tests.conftest import compose_cfg, group_options

GROUPS = ["model", "data", "activation", "optimizer", "scheduler", "regularization", "trainer"]


def test_default_config_is_lenet_on_digits() -> None:
    cfg = compose_cfg()
    assert cfg["model"]["_target_"].endswith("LeNet5")
    assert cfg["data"]["_target_"].endswith("load_digits_images")
    assert cfg["trainer"]["device"] == "auto"
    validate(cfg)


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_validates(group: str) -> None:
    options = group_options(group)
    assert options, f"configs/{group}/ is empty"
    for option in options:
        if group == "activation" and option == "softmax":
            continue  # composes, but is refused when built (see test_models)
        validate(compose_cfg(f"{group}={option}"))


def test_regularization_presets_override_their_base() -> None:
    assert compose_cfg("regularization=dropout")["regularization"]["dropout"] == 0.3
    assert compose_cfg("regularization=l2")["regularization"]["l2"] > 0
    strong = compose_cfg("regularization=strong")["regularization"]
    assert strong["dropout"] > 0 and strong["l2"] > 0 and strong["early_stopping"]["enabled"]


def test_misspelled_key_is_rejected_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="epochz"):
        compose_cfg("trainer.epochz=3")


def test_wrong_type_is_rejected_by_the_schema() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError), match="epochs"):
        compose_cfg("trainer.epochs=abc")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("regularization.dropout=1.5", "regularization.dropout"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.device=gpu", "trainer.device"),
        ("regularization.l2=-0.1", "regularization.l2"),
        ("eval.threshold=1.5", "eval.threshold"),
    ],
)
def test_out_of_range_values_name_their_key(override: str, key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate(compose_cfg(override))


def test_metric_mode_infers_direction_from_the_name() -> None:
    assert metric_mode("val_loss") == "min"
    assert metric_mode("val_rmse") == "min"
    assert metric_mode("val_accuracy") == "max"
    assert metric_mode("val_accuracy", "min") == "min"
