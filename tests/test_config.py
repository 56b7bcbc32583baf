"""Every config composes; the schema and validator reject bad values by name."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from dlrun.config import metric_mode, validate
from dlrun.errors import UserError
from tests.conftest import compose_cfg, group_options, run_cli

GROUPS = [
    "model", "data", "activation", "optimizer", "scheduler", "regularization", "trainer",
    "callbacks",
]  # fmt: skip


def test_default_config_is_lenet_on_digits() -> None:
    cfg = compose_cfg()
    assert cfg.model["_target_"].endswith("LeNet5")
    assert cfg.data["_target_"].endswith("load_digits_images")
    assert cfg.trainer.device == "auto"
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
    assert compose_cfg("regularization=dropout").regularization.dropout == 0.3
    assert compose_cfg("regularization=l2").regularization.l2 > 0
    strong = compose_cfg("regularization=strong").regularization
    assert strong.dropout > 0 and strong.l2 > 0 and strong.early_stopping.enabled


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


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.val_fraction=0"], "data.val_fraction"),
        (["data.test_fraction=1.0"], "data.test_fraction"),
        (["data.val_fraction=-0.1"], "data.val_fraction"),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction + data.test"),
        (["data=mnist", "data.val_fraction=0"], "data.val_fraction"),
        (["data=mnist", "data.limit=0"], "data.limit"),
        (["data=sine", "data.window=0"], "data.window"),
        (["data=sine", "data.horizon=1.5"], "data.horizon"),
        (["data=text", "data.block_size=0"], "data.block_size"),
        (["data=multilabel", "data.n_samples=0"], "data.n_samples"),
    ],
)
def test_data_options_every_loader_shares_are_range_checked(overrides: list[str], key: str) -> None:
    with pytest.raises(UserError, match=re.escape(key)):
        validate(compose_cfg(*overrides))


def test_data_options_accept_their_nulls() -> None:
    validate(compose_cfg("data=mnist", "data.limit=null"))
    validate(compose_cfg("data=text", "data.stride=null"))


def test_a_bad_data_fraction_stops_before_the_run_dir(workdir: Path) -> None:
    result = run_cli("data.val_fraction=0", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "data.val_fraction=0 is invalid: must be in (0, 1)" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    runs = workdir / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("choice", "module", "extra"),
    [
        ("logger=tensorboard", "tensorboard", "tensorboard"),
        ("data=sunspots", "statsmodels", "series"),
    ],
)
def test_an_option_whose_package_is_missing_names_its_extra(
    choice: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    group, option = choice.split("=")
    cfg = compose_cfg(choice, "model=gru" if group == "data" else "model=mlp")
    validate(cfg)  # without the choices only the values are checked
    with pytest.raises(UserError, match=re.escape(f"pip install 'dlrun[{extra}]'")):
        validate(cfg, choices={group: option})


def test_a_single_run_does_not_need_the_sweep_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    cfg = compose_cfg("hparams_search=mlp_iris")
    validate(cfg, choices={"hydra/sweeper": "dlrun_optuna", "hydra/launcher": "submitit_slurm"})
