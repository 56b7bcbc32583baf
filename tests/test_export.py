"""dlrun-export: every family to ONNX (checked with ONNX Runtime) and TorchScript."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHRINK, run_tool, train_run
from tests.test_models import SPECS, make

pytest.importorskip("onnxruntime")

# (family, data spec of tests/test_models.py): every family, every input kind
FAMILIES = [
    ("mlp", "tab_multiclass"), ("mlp", "tab_regression"), ("lenet", "img_multiclass"),
    ("alexnet", "img_multiclass"), ("googlenet", "img_multiclass"),
    ("resnet", "img_multiclass"), ("separable", "img_multiclass"),
    ("cnn1d", "seq_multiclass"), ("rnn", "seq_multiclass"), ("lstm", "seq_forecast"),
    ("gru", "tok_binary"), ("gpt", "tok_binary"), ("gpt", "tok_lm"),
]  # fmt: skip


def _inputs(spec, n: int, lengths: bool) -> tuple[torch.Tensor, ...]:
    from tests.test_models import sample

    x = sample(spec, n)
    if not lengths:
        return (x,)
    return (
        x,
        torch.randint(1, spec.input_shape[0] + 1, (n,), generator=torch.Generator().manual_seed(0)),
    )


@pytest.mark.parametrize(("family", "data"), FAMILIES)
def test_every_family_exports_to_onnx_with_the_same_outputs(
    family: str, data: str, tmp_path: Path
) -> None:
    from dlrun.export import export_model, runner

    model = make(family, data).eval()
    spec = SPECS[data]
    padded = spec.kind.value in ("sequence", "tokens") and spec.task.value != "language_model"
    args = _inputs(spec, 2, padded)
    names = ["x", "lengths"][: len(args)]
    export_model(model, args, names, tmp_path / "m.onnx", "onnx", "legacy")
    batch = _inputs(spec, 7, padded)  # another batch size than the one exported with
    with torch.no_grad():
        expected = model(*batch).double()
    got = runner(tmp_path / "m.onnx", "onnx")(batch)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_the_default_exporter_and_torchscript(exporter: str, tmp_path: Path) -> None:
    from dlrun.export import export_model, runner

    model = make("lenet", "img_multiclass").eval()
    fmt = "torchscript" if exporter == "torchscript" else "onnx"
    path = tmp_path / ("m.pt" if fmt == "torchscript" else "m.onnx")
    args = _inputs(SPECS["img_multiclass"], 2, False)
    used = export_model(model, args, ["x"], path, fmt, "dynamo")
    assert used == ("torch.jit.trace" if fmt == "torchscript" else "dynamo")
    batch = _inputs(SPECS["img_multiclass"], 5, False)
    with torch.no_grad():
        assert (runner(path, fmt)(batch) - model(*batch).double()).abs().max() < 1e-4


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "iris"
    train_run(run_dir, "model=mlp", "data=iris", "trainer.epochs=3")
    return run_dir


def test_export_writes_the_model_its_contract_and_parity(iris_run: Path) -> None:
    from dlrun.export_cli import DEFAULTS, export_saved

    out, _ = export_saved({**DEFAULTS, "run": str(iris_run), "exporter": "legacy",
                                "quantize": "dynamic-int8"})  # fmt: skip
    assert out == iris_run / "export" / "onnx_int8"
    parity = json.loads((out / "parity.json").read_text())
    assert parity["float32"]["max_abs_diff"] < 1e-5
    assert parity["float32"]["label_agreement"] == 1.0
    assert parity["float32"]["accuracy"] == pytest.approx(parity["pytorch"]["accuracy"])
    assert parity["int8"]["label_agreement"] >= 0.9
    assert parity["sizes_bytes"]["int8"] < parity["sizes_bytes"]["float32"]
    contract = json.loads((out / "contract.json").read_text())
    assert contract["file"] == "model.int8.onnx" and contract["output_activation"] == "softmax"
    assert contract["inputs"] == [{"name": "x", "shape": ["N", 4], "dtype": "float32"}]
    assert contract["class_names"] == ["setosa", "versicolor", "virginica"]
    assert contract["preprocess"]["type"] == "table"
    # the contract is enough to use the file without dlrun: standardise, run, softmax
    import onnxruntime as ort

    steps = contract["preprocess"]["numeric"]
    raw = (5.1, 3.5, 1.4, 0.2)
    row = [[(v - c["mean"]) / c["std"] for v, c in zip(raw, steps, strict=True)]]
    row = np.array(row, dtype=np.float32)
    logits = ort.InferenceSession(str(out / "model.onnx")).run(None, {"x": row})[0]
    assert logits.shape == (1, 3)


def test_torchscript_export_with_int8_reports_size_and_accuracy(iris_run: Path) -> None:
    result = run_tool("dlrun.export_cli", f"run={iris_run}", "format=torchscript",
                      "quantize=dynamic-int8")  # fmt: skip
    assert result.returncode == 0, result.stderr
    parity = json.loads((iris_run / "export" / "torchscript_int8" / "parity.json").read_text())
    assert parity["float32"]["max_abs_diff"] < 1e-5
    assert "accuracy" in parity["int8"] and "int8" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["format=tflite"], "format=tflite is invalid"),
        (["quantize=int4"], "quantize=int4 is invalid"),
        (["check=maybe"], "not a valid boolean"),
    ],
)
def test_bad_arguments_are_one_line(iris_run: Path, args: list[str], message: str) -> None:
    result = run_tool("dlrun.export_cli", f"run={iris_run}", *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_extra_names_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlrun import config
    from dlrun.errors import UserError
    from dlrun.export_cli import DEFAULTS, check_args

    monkeypatch.setattr(config, "_installed", lambda module: module != "onnxruntime")
    with pytest.raises(UserError, match=r"pip install 'dlrun\[export\]'"):
        check_args({**DEFAULTS, "run": "x"})


def test_a_model_no_exporter_takes_is_one_line(tmp_path: Path) -> None:
    from dlrun.errors import UserError
    from dlrun.export import export_model

    class ThroughNumpy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.sort(x.detach().numpy()))  # outside torch's graph

    with pytest.raises(UserError, match="cannot export to onnx") as info:
        export_model(ThroughNumpy(), (torch.randn(2, 3),), ["x"], tmp_path / "m.onnx",
                     "onnx", "dynamo")  # fmt: skip
    assert "\n" not in str(info.value) and not (tmp_path / "m.onnx").exists()


def test_an_export_that_fails_leaves_no_folder(
    iris_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlrun import export
    from dlrun.errors import UserError
    from dlrun.export_cli import DEFAULTS, export_saved

    def refuse(*_: object, **__: object) -> str:
        raise UserError("cannot export to onnx: no")

    monkeypatch.setattr(export, "export_model", refuse)
    with pytest.raises(UserError):
        export_saved({**DEFAULTS, "run": str(iris_run), "out": str(tmp_path / "new")})
    assert not (tmp_path / "new").exists()


def test_gpt_language_model_exports_with_its_fixed_context(tmp_path: Path) -> None:
    run_dir = tmp_path / "gpt"
    train_run(run_dir, "model=gpt", "data=text", "model.n_layer=1", "model.n_embd=32",
              "model.n_head=2", *SHRINK)  # fmt: skip
    from dlrun.export_cli import DEFAULTS, export_saved

    out, report = export_saved({**DEFAULTS, "run": str(run_dir), "exporter": "legacy"})
    assert report["float32"]["max_abs_diff"] < 1e-4 and report["float32"]["label_agreement"] == 1.0
    contract = json.loads((out / "contract.json").read_text())
    assert contract["inputs"][0] == {"name": "x", "shape": ["N", 64], "dtype": "int64"}
    assert contract["outputs"][0]["shape"] == ["N", 64, contract["spec"]["vocab_size"]]


def test_a_second_export_never_overwrites_the_first(iris_run: Path, tmp_path: Path) -> None:
    from dlrun.errors import UserError
    from dlrun.export_cli import DEFAULTS, export_saved

    args = {**DEFAULTS, "run": str(iris_run), "exporter": "legacy", "format": "torchscript"}
    first, _ = export_saved(args)
    before = (first / "model.pt").read_bytes()
    second, _ = export_saved(args)
    assert second == first.with_name(f"{first.name}_2")
    assert (first / "model.pt").read_bytes() == before
    given = tmp_path / "mine"
    given.mkdir()
    (given / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds files"):
        export_saved({**args, "out": str(given)})
    assert [p.name for p in given.iterdir()] == ["notes.txt"]
    out, _ = export_saved({**args, "out": str(tmp_path / "new" / "folder")})
    assert (out / "model.pt").is_file() and (out / "contract.json").is_file()
