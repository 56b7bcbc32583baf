"""``dlrun-export``: a trained run (or ensemble) as an ONNX or TorchScript file, checked.

    dlrun-export run=<run dir | ensemble dir> [format=onnx|torchscript]
                 [quantize=none|dynamic-int8] [out=<new dir>] [ckpt=best|last]
                 [exporter=auto|dynamo|legacy] [check=true] [batch_size=256]

Writes into <run>/export/<format>[_int8]/ (_2, _3, ... when taken) or out=:
  model.onnx | model.pt       the model (float32 weights), batch axis dynamic
  model.int8.onnx | .int8.pt  with quantize=dynamic-int8: int8 weights
  contract.json               its input contract: input names, shapes and dtypes, the
                              output (raw logits or values) and how to read it (softmax,
                              sigmoid, the target scaler), class names, and the run's
                              preprocessing (as in the run's contract.json)
  parity.json                 the check on the run's test split: max |difference| of the
                              outputs against the PyTorch model, agreement of predicted
                              labels, accuracy (or RMSE) and file size of each file

ONNX is checked with ONNX Runtime, TorchScript with torch.jit.load. check=false skips
the check (when the run's data can't be loaded here). exporter=auto uses torch.export
(dynamo) and falls back to the TorchScript-based exporter for a model dynamo can't trace;
parity.json says which one wrote the file. Every family exports: MLP, the
CNNs, RNN/LSTM/GRU and CNN1D (padded data adds a `lengths` input), GPT (its context is
its block size); an exporter that refuses a model is named in one line.
Needs pip install 'dlrun[export]'. Exit codes: 0 done, 2 bad arguments or a model that
cannot be exported, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dlrun.cli_args import boolean, errors_reported, parse_key_values
from dlrun.errors import UserError

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {
    "run": "",
    "format": "onnx",
    "quantize": "none",
    "out": "",
    "ckpt": "best",
    "exporter": "auto",
    "check": True,
    "batch_size": 256,
}
KINDS = {"check": boolean}


def check_args(args: dict[str, Any]) -> None:
    """Refuse bad choices, and name the extra a missing package comes with."""
    from dlrun.config import require
    from dlrun.export import EXPORTERS, FORMATS, QUANTIZE

    for key, choices in (("format", FORMATS), ("quantize", QUANTIZE), ("exporter", EXPORTERS)):
        if args[key] not in choices:
            raise UserError(f"{key}={args[key]} is invalid: use {', '.join(choices)}")
    if args["batch_size"] < 1:
        raise UserError("batch_size must be >= 1")
    if args["format"] == "onnx":
        require("format=onnx", *(["exporter=dynamo"] if args["exporter"] == "dynamo" else []))


def export_saved(args: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Export per ``args``; returns the folder and the parity report written there."""
    from dlrun.restore import check_run_arg

    check_run_arg(args["run"], args["ckpt"])
    check_args(args)
    from dlrun.predictor import load_predictor
    from dlrun.rundir import new_output_dir

    fmt, quantized = args["format"], args["quantize"] != "none"
    predictor = load_predictor(Path(args["run"]), args["ckpt"], "cpu")
    contract = predictor.contract
    test = _test_split(predictor) if args["check"] else None
    example = model_args(
        contract, *(example_inputs(contract) if test is None else (test.x, test.lengths))
    )
    label = fmt + ("_int8" if quantized else "")
    with new_output_dir(args["out"], predictor.run_dir / "export", label) as out:
        report = _write_files(predictor, out, args, example, test)
    return out, report


def _write_files(
    predictor: Any, out: Path, args: dict[str, Any], example: tuple, test: Any
) -> dict[str, Any]:
    """The model file(s), parity.json and contract.json in ``out``."""
    from dlrun import export
    from dlrun.evaluation.files import write_json

    fmt = args["format"]
    path = out / export.FILES[fmt]
    names = export.input_names(predictor.contract)
    head = tuple(a[:2] for a in example)
    used = export.export_model(predictor.model, head, names, path, fmt, args["exporter"])
    files = {"float32": path}
    if args["quantize"] != "none":
        files["int8"] = _quantize(predictor, path, fmt, head, names)
    report = {"format": fmt, "exporter": used, "files": {k: v.name for k, v in files.items()}}
    report["sizes_bytes"] = {k: v.stat().st_size for k, v in files.items()}
    if test is not None:
        report.update(parity(predictor, files, fmt, example, test.y, args["batch_size"]))
    write_json(out / "parity.json", report)
    write_json(out / "contract.json", contract_json(predictor, files, fmt, args))
    return report


def _quantize(predictor: Any, path: Path, fmt: str, example: tuple, names: list) -> Path:
    from dlrun import export

    target = path.with_name(path.stem + ".int8" + path.suffix)
    if fmt == "onnx":
        export.quantize_onnx(path, target)
    else:
        export.export_model(export.quantize_torch(predictor.model), example, names, target, fmt)
    return target


def model_args(contract: Any, x: Any, lengths: Any = None) -> tuple:
    """The model's positional inputs: ``(x,)`` or ``(x, lengths)`` (full lengths when
    the data had none, e.g. a test split of whole text blocks)."""
    import torch

    if not contract.lengths:
        return (x,)
    if lengths is None:
        lengths = torch.full((len(x),), x.shape[1], dtype=torch.int64)
    return (x, lengths.to(torch.int64))


def example_inputs(contract: Any) -> tuple:
    """Two rows of zeros of the training shape (when the test split isn't loaded)."""
    import torch

    from dlrun.export import input_dtype

    return (torch.zeros(2, *contract.spec.input_shape, dtype=input_dtype(contract)), None)


def _test_split(predictor: Any) -> Any:
    """The run's test split, loaded from its data config (as dlrun-eval does)."""
    from dlrun.runner import instantiate

    cfg = predictor.cfg
    try:
        return instantiate(cfg.data, seed=cfg.seed).test
    except UserError as exc:
        raise UserError(
            f"the test split to check the export on cannot be loaded ({exc}); "
            "check=false exports without the check"
        ) from None


def parity(
    predictor: Any, files: dict[str, Path], fmt: str, args: tuple, y: Any, batch_size: int
) -> dict[str, Any]:
    """Every file against the PyTorch model on the test split."""
    import torch

    from dlrun import export

    def torch_model(batch: tuple) -> torch.Tensor:
        with torch.no_grad():
            return predictor.model(*batch).double()

    reference = export.batched(torch_model, args, batch_size)
    report: dict[str, Any] = {"n_test": len(y), "pytorch": _quality(predictor, reference, y)}
    for name, path in files.items():
        try:
            outputs = export.batched(export.runner(path, fmt), args, batch_size)
        except Exception as exc:  # a runtime refusing the file, or a trace that can't
            # take another batch size: the export does not work, whatever wrote it
            raise UserError(
                f"the exported {name} file fails on the test split "
                f"({type(exc).__name__}: {export._first_line(exc)})"
            ) from exc
        report[name] = {
            **_quality(predictor, outputs, y),
            "max_abs_diff": float((outputs - reference).abs().max()),
            "label_agreement": _agreement(predictor, outputs, reference),
        }
    return report


def _decide(predictor: Any, outputs: Any) -> Any:
    """Hard predictions (labels, label sets, tokens) or values in the data's units."""
    from dlrun.predictor import interpret
    from dlrun.tasks import info

    if info(predictor.task).per_token:
        return outputs.argmax(-1)
    threshold = predictor.cfg.eval.threshold
    scaler = predictor.contract.meta.get("target_scaler")
    return interpret(predictor.task, outputs, threshold, scaler).preds


def _quality(predictor: Any, outputs: Any, y: Any) -> dict[str, float]:
    """Accuracy of the predicted labels, or RMSE in the data's units."""
    from dlrun.evaluation.predict import unscale
    from dlrun.tasks import info

    preds = _decide(predictor, outputs)
    if info(predictor.task).scaled:
        truth = unscale(y.reshape(preds.shape), predictor.contract.meta.get("target_scaler"))
        return {"rmse": float(((preds - truth) ** 2).mean().sqrt())}
    return {"accuracy": float((preds == y.reshape(preds.shape).long()).double().mean())}


def _agreement(predictor: Any, outputs: Any, reference: Any) -> float | None:
    from dlrun.tasks import info

    if info(predictor.task).scaled:
        return None
    return float((_decide(predictor, outputs) == _decide(predictor, reference)).double().mean())


def contract_json(
    predictor: Any, files: dict[str, Path], fmt: str, args: dict[str, Any]
) -> dict[str, Any]:
    """What a program needs to call the exported file without dlrun."""
    from dlrun import export
    from dlrun.data.contract import to_dict
    from dlrun.tasks import info

    contract = predictor.contract
    spec = contract.spec
    return {
        "format": fmt,
        "file": files.get("int8", files["float32"]).name,
        "run": str(predictor.run_dir),
        "ckpt": args["ckpt"],
        "members": predictor.members,
        "inputs": export.input_signature(contract),
        "outputs": [
            {
                "name": export.OUTPUT,
                "shape": ["N", *_output_shape(spec)],
                "dtype": "float32",
                "meaning": "raw logits or values, before the output activation",
            }
        ],
        "task": str(spec.task),
        "output_activation": info(spec.task).output,
        "class_names": list(spec.class_names),
        "target_scaler": contract.meta.get("target_scaler"),
        "threshold": predictor.cfg.eval.threshold,
        **{k: v for k, v in to_dict(contract).items() if k in ("spec", "preprocess")},
    }


def _output_shape(spec: Any) -> list[int]:
    from dlrun.tasks import info

    if info(spec.task).per_token:
        return [spec.input_shape[0], spec.vocab_size]
    return [spec.n_outputs]


def main() -> None:
    args = parse_key_values(
        sys.argv[1:], DEFAULTS, USAGE, required=("run",), kinds=KINDS, prog="dlrun-export"
    )
    with errors_reported("dlrun-export"):
        out, report = export_saved(args)
    _print_report(out, report)


def _print_report(out: Path, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from dlrun.display import number

    table = Table(title=f"{report['format']} export: parity on the test split")
    for column in ("model", "size (bytes)", "metric", "max |diff|", "labels agree"):
        table.add_column(column, justify="right")
    for name in ("pytorch", *report["files"]):
        row = report.get(name, {})
        metric = next((f"{k} {number(v)}" for k, v in row.items() if k in ("accuracy", "rmse")), "")
        agree = row.get("label_agreement")
        table.add_row(
            name,
            str(report["sizes_bytes"].get(name, "")),
            metric,
            number(row["max_abs_diff"]) if "max_abs_diff" in row else "",
            "" if agree is None else f"{agree:.2%}",
        )
    Console().print(table)
    print(f"exported to {out}")


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
