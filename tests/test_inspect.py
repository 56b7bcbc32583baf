"""dlrun-inspect: Grad-CAM lands where the class is decided; attributions find the feature."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from dlrun.diagnostics import inspection
from tests.conftest import SHRINK, run_cli

pytest.importorskip("captum")


def _region_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 noise; class 1 iff the top-left 6x6 corner holds a bright square."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, 1:5, 1:5] += 2.0
    return x, y


def test_grad_cam_of_a_cnn_lands_on_the_region_that_decides_the_class():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), conv, nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    x, y = _region_images(256, seed=0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    test_x, test_y = _region_images(64, seed=1)
    pred, _ = inspection.predictions(model, test_x)
    assert (pred == test_y).float().mean() > 0.95
    ones = test_x[test_y == 1]
    cam = inspection.grad_cam(model, conv, ones, torch.ones(len(ones), dtype=torch.long))
    inside = cam[:, :6, :6].sum((1, 2))
    assert (inside / cam.sum((1, 2))).mean() > 0.5  # 36 of 256 pixels hold most of the heat
    assert cam.amax() == pytest.approx(1.0)


def test_integrated_gradients_put_the_weight_on_the_feature_the_model_uses():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[4.0, 0.1, 0.0], [-4.0, 0.0, 0.1]]))
        model.bias.zero_()
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    attr = inspection.integrated_gradients(model, x, torch.zeros(20, dtype=torch.long))
    assert attr.abs().mean(0).argmax() == 0
    assert torch.allclose(attr[:, 0], 4.0 * x[:, 0], atol=1e-4)  # exact for a linear model


def _inspect(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["dlrun-inspect", *argv])
    try:
        inspection.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _saved_run(tmp_path, *overrides: str):
    run = tmp_path / "run"
    made = run_cli(*overrides, *SHRINK, f"hydra.run.dir={run}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return run


def test_a_cnn_run_gets_filters_feature_maps_and_grad_cam(tmp_path, monkeypatch, capsys):
    run = _saved_run(tmp_path, "model=lenet")
    code, err = _inspect(monkeypatch, capsys, f"run={run}", "images=0,3")
    assert code == 0, err
    for name in ("filters.png", "feature_maps.png", "gradcam.png", "inspect.md"):
        assert (run / "inspect" / name).stat().st_size > 0
    assert "test images 0, 3" in (run / "inspect" / "inspect.md").read_text()
    code, _ = _inspect(monkeypatch, capsys, f"run={run}")
    assert code == 0 and (run / "inspect_2" / "gradcam.png").is_file()  # nothing overwritten


def test_a_tabular_run_gets_feature_attributions(tmp_path, monkeypatch, capsys):
    run = _saved_run(tmp_path, "model=mlp", "data=iris")
    code, err = _inspect(monkeypatch, capsys, f"run={run}", f"out={tmp_path / 'o'}")
    assert code == 0, err
    text = (tmp_path / "o" / "inspect.md").read_text()
    assert "integrated gradients" in text and text.count("| x") + text.count("| petal") >= 1
    assert (tmp_path / "o" / "attributions.png").stat().st_size > 0


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = _inspect(monkeypatch, capsys, f"run={tmp_path / 'none'}")
    assert code == 2 and err.startswith("dlrun-inspect: error: run dir not found")
    assert err.count("\n") == 1
