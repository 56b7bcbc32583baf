"""A trained model as a file another runtime can run: ONNX or TorchScript, optionally
with int8 weights, and proof that it computes what the PyTorch model computes.

- ONNX through ``torch.onnx.export``: the ``torch.export``-based exporter (dynamo) by
  default, the older TorchScript-based one (``exporter=legacy``: deprecated by PyTorch,
  ten times faster to run) when dynamo can't trace a model; a dynamic batch axis. ONNX
  Runtime is the reference runtime every file is checked with.
- TorchScript through ``torch.jit.trace`` (deprecated by PyTorch in favour of
  ``torch.export``, still the format C++ ``torch::jit::load`` and older mobile runtimes
  read).
- ``dynamic-int8``: weights stored as int8, activations quantized on the fly. ONNX:
  ONNX Runtime's ``quantize_dynamic`` (MatMul/Gemm, attention and recurrent weights);
  TorchScript: ``torch.ao.quantization.quantize_dynamic`` on Linear and recurrent layers
  (convolutions stay float: dynamic quantization has no conv kernels).

Inputs: ``x`` (float32 features/pixels/steps, or int64 token ids), plus ``lengths``
(int64, valid steps) for padded sequences and text; the batch axis is dynamic, every
other axis is the training shape (a GPT's context is its block size). Outputs: the raw
logits or values of the run's model, before the task's softmax/sigmoid.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.data.contract import Contract
from dlrun.data.spec import DataKind
from dlrun.errors import UserError

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("none", "dynamic-int8")
EXPORTERS = ("auto", "dynamo", "legacy")
FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
OUTPUT = "outputs"

Runner = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


def input_names(contract: Contract) -> list[str]:
    """``x``, and ``lengths`` when the model reads valid lengths of padded rows."""
    return ["x", "lengths"] if contract.lengths else ["x"]


def input_dtype(contract: Contract) -> torch.dtype:
    return torch.int64 if contract.spec.kind is DataKind.TOKENS else torch.float32


def input_signature(contract: Contract) -> list[dict]:
    """The inputs as the contract JSON states them (``N`` is the dynamic batch axis)."""
    dtype = "int64" if contract.spec.kind is DataKind.TOKENS else "float32"
    signature = [{"name": "x", "shape": ["N", *contract.spec.input_shape], "dtype": dtype}]
    if contract.lengths:
        signature.append({"name": "lengths", "shape": ["N"], "dtype": "int64"})
    return signature


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Exporters print progress, log advice and warn of deprecations; the command
    reports what matters itself."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def export_model(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    names: list[str],
    path: Path,
    fmt: str,
    exporter: str = "auto",
) -> str:
    """Write ``model`` (eval mode, CPU) to ``path``; returns the exporter that did it.

    ``auto`` tries ``torch.export`` (dynamo) first and falls back to the TorchScript-based
    exporter when the model can't be traced that way (a packed bidirectional RNN, say).
    A model no exporter takes is one line naming the reason.
    """
    model.eval()
    if fmt == "torchscript":
        _export(lambda: torch.jit.trace(model, args, check_trace=False).save(str(path)), path, fmt)
        return "torch.jit.trace"
    if exporter == "auto":
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            exporter = "legacy"
        else:
            try:
                return export_model(model, args, names, path, fmt, "dynamo")
            except UserError as exc:
                export_model(model, args, names, path, fmt, "legacy")
                return f"legacy (dynamo: {exc})"
    if exporter == "dynamo":
        shapes = tuple({0: torch.export.Dim("batch", max=1 << 20)} for _ in args)

        def dynamo() -> None:
            program = torch.onnx.export(
                model, args, dynamo=True, input_names=names, output_names=[OUTPUT],
                dynamic_shapes=shapes, verbose=False,
            )  # fmt: skip
            program.save(str(path))

        _export(dynamo, path, fmt, "(exporter=legacy may succeed)")
        return "dynamo"
    axes = {name: {0: "N"} for name in [*names, OUTPUT]}
    _export(
        lambda: torch.onnx.export(
            model, args, str(path), dynamo=False, input_names=names, output_names=[OUTPUT],
            dynamic_axes=axes,
        ),
        path,
        fmt,
    )  # fmt: skip
    return "legacy"


def _export(write: Callable[[], Any], path: Path, fmt: str, hint: str = "") -> None:
    """Run an exporter quietly; its failure is one line (the root cause, no colours)."""
    try:
        with quiet(), torch.no_grad():
            write()
    except Exception as exc:  # exporters raise many types; the root cause says why
        path.unlink(missing_ok=True)
        raise UserError(f"cannot export to {fmt}: {_root_cause(exc)} {hint}".strip()) from exc


def quantize_onnx(source: Path, target: Path) -> None:
    """int8 weights with dynamic activation quantization (ONNX Runtime's tool)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with quiet():
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise UserError(f"cannot quantize {source.name}: {_first_line(exc)}") from exc


def quantize_torch(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with int8 Linear and recurrent layers (CPU inference)."""
    import copy

    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        raise UserError(
            "this torch has no torch.ao.quantization.quantize_dynamic; quantize with "
            "format=onnx instead"
        )
    layers = {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU}
    with quiet():
        return quantization.quantize_dynamic(copy.deepcopy(model), layers, dtype=torch.qint8)


def runner(path: Path, fmt: str) -> Runner:
    """Run the exported file: ONNX Runtime (CPU) or ``torch.jit.load``."""
    if fmt == "torchscript":
        with quiet():
            loaded = torch.jit.load(str(path), map_location="cpu")
        loaded.eval()

        def run_script(args: tuple[torch.Tensor, ...]) -> torch.Tensor:
            with torch.no_grad():
                return loaded(*args).double()

        return run_script
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run_onnx(args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        feed = {n: a.numpy() for n, a in zip(names, args, strict=True)}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0])).double()

    return run_onnx


def batched(run: Runner, args: tuple[torch.Tensor, ...], batch_size: int) -> torch.Tensor:
    """``run`` over ``args`` in batches (runtimes hold one batch in memory at a time)."""
    n = len(args[0])
    parts = [run(tuple(a[i : i + batch_size] for a in args)) for i in range(0, n, batch_size)]
    return torch.cat(parts)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # no terminal colours
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's first line: what actually stopped the exporter."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {_first_line(exc)}"
