"""dlrun-lrfind: the learning-rate range test and its suggestion."""

from __future__ import annotations

import itertools
import json
import sys

import pytest

from dlrun.diagnostics import lrfind
from tests.conftest import compose_cfg


def test_the_schedule_grows_geometrically_from_start_to_end():
    lrs = lrfind.lr_schedule(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in itertools.pairwise(lrs))


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = [10.0**e for e in range(-6, 2)]
    losses = [2.3, 2.3, 2.2, 1.5, 0.9, 0.8, 3.0, 9.0]  # flat, steepest around 1e-3, blow-up
    assert lrfind.suggest(lrs, losses) == pytest.approx(1e-3)


def test_no_suggestion_when_the_loss_never_falls():
    assert lrfind.suggest([1e-3, 1e-2, 1e-1, 1.0], [2.0, 2.1, 2.5, 9.0]) is None


def _main(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["dlrun-lrfind", *argv])
    lrfind.main()


def test_a_range_test_on_a_real_model_suggests_an_lr_and_writes_plot_and_json(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "lr"
    _main(monkeypatch, "model=mlp", "data=iris", "steps=40", "end_lr=100", f"out={out}")
    printed = capsys.readouterr().out
    result = json.loads((out / "lr_find.json").read_text())
    assert (out / "lr_find.png").stat().st_size > 0
    assert result["suggested_lr"] is not None
    assert 1e-5 < result["suggested_lr"] < 10  # Adam on iris: somewhere sane
    assert f"optimizer.lr={result['suggested_lr']:.2g}" in printed
    assert len(result["lr"]) < 40  # the blow-up at lr 100 ended the test early


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for argv, says in [
        (("start_lr=1", "end_lr=0.1"), "need 0 < start_lr < end_lr"),
        (("model=nosuch",), "model"),
        ((f"out={tmp_path / 'full'}", "data=iris", "model=mlp"), "already holds files"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            _main(monkeypatch, *argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert err.startswith("dlrun-lrfind: error:") and says in err
        assert err.count("\n") == 1
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_tool_takes_the_same_overrides_as_dlrun():
    from dlrun.diagnostics.command import compose_run_config

    cfg, names = compose_run_config(["model=mlp", "data=iris", "optimizer.lr=0.5"])
    expected = compose_cfg("model=mlp", "data=iris", "optimizer.lr=0.5", "eval.plots=true")
    assert cfg == expected
    assert (names.model_name, names.data_name) == ("mlp", "iris")
