"""``dlrun-serve``: a trained run (or ensemble) behind an HTTP API (FastAPI + uvicorn).

    dlrun-serve run=<run dir | ensemble dir> [host=127.0.0.1] [port=8000]
                [runtime=torch|onnx] [ckpt=best|last] [max_batch=256]
                [max_inputs=1024] [max_body_mb=8] [exporter=auto|dynamo|legacy]
                [device=auto] [threads=<torch's default>]

Routes:
  POST /predict   {"inputs": [...]} or {"input": ...} in the run's raw units (table rows
                  as {"column": value}, images as nested lists (C, H, W) in [0, 1] or
                  0-255, text as strings, a series' last steps, sequences as lists);
                  answers {"predictions": [{"label", "probabilities"} | {"value"}]}
  GET /health     {"status": "ok"}
  GET /metadata   the input contract, how to send inputs, the run's test metrics
  GET /docs       OpenAPI docs (/openapi.json)

Inputs are preprocessed exactly as in training (the run's contract.json). Concurrent
requests are batched into one model call (up to max_batch rows). runtime=onnx exports
the model at start (into a temporary folder) and serves it with ONNX Runtime.
Bad requests get a 4xx and one line; the server keeps running. It listens on 127.0.0.1
unless host= says otherwise (host=0.0.0.0 exposes it to the network: there is no
authentication). Needs pip install 'dlrun[serve]' (and 'dlrun[export]' for onnx).
Exit codes: 0 stopped (Ctrl-C or SIGTERM: a graceful shutdown), 2 bad arguments or run
dir, 130 interrupted before the server was up.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from dlrun.cli_args import errors_reported, parse_key_values
from dlrun.engine.interrupts import stop_signals_handled_by
from dlrun.errors import UserError

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {
    "run": "",
    "host": "127.0.0.1",
    "port": 8000,
    "runtime": "torch",
    "ckpt": "best",
    "max_batch": 256,
    "max_inputs": 1024,
    "max_body_mb": 8.0,
    "exporter": "auto",
    "device": "auto",
    "threads": None,  # torch CPU threads (None: torch's default, one per core)
}
KINDS = {"threads": int}
RUNTIMES = ("torch", "onnx")


def build_app(args: dict[str, Any], workdir: Path) -> Any:
    """The FastAPI app for ``args``; an ONNX model is exported into ``workdir``."""
    from dlrun.config import require
    from dlrun.restore import check_run_arg

    check_run_arg(args["run"], args["ckpt"])
    require("dlrun-serve")
    if args["runtime"] not in RUNTIMES:
        raise UserError(f"runtime={args['runtime']} is invalid: use {', '.join(RUNTIMES)}")
    for key in ("max_batch", "max_inputs"):
        if args[key] < 1:
            raise UserError(f"{key}={args[key]} is invalid: must be >= 1")
    if not 0 <= args["port"] < 65536:
        raise UserError(f"port={args['port']} is invalid: use 0-65535")
    if args["max_body_mb"] <= 0:
        raise UserError("max_body_mb must be > 0")
    from dlrun.predictor import load_predictor
    from dlrun.serve import Limits, create_app

    if args["threads"] is not None:
        import torch

        if args["threads"] < 1:
            raise UserError(f"threads={args['threads']} is invalid: must be >= 1")
        torch.set_num_threads(args["threads"])
    device = "cpu" if args["runtime"] == "onnx" else args["device"]
    predictor = load_predictor(Path(args["run"]), args["ckpt"], device)
    backend = _backend(predictor, args, workdir)
    limits = Limits(args["max_inputs"], int(args["max_body_mb"] * (1 << 20)), args["max_batch"])
    return create_app(predictor, backend, args["runtime"], limits)


def _backend(predictor: Any, args: dict[str, Any], workdir: Path) -> Any:
    """The function that runs a batch: the PyTorch model, or the exported ONNX file."""
    import torch

    if args["runtime"] == "torch":
        model, device = predictor.model, predictor.device

        def run_torch(batch: tuple) -> torch.Tensor:
            with torch.no_grad():
                return model(*(a.to(device) for a in batch)).cpu()

        return run_torch
    from dlrun import export
    from dlrun.config import require
    from dlrun.export_cli import example_inputs, model_args

    require("format=onnx", *(["exporter=dynamo"] if args["exporter"] == "dynamo" else []))
    path = workdir / "model.onnx"
    example = model_args(predictor.contract, *example_inputs(predictor.contract))
    names = export.input_names(predictor.contract)
    export.export_model(predictor.model, example, names, path, "onnx", args["exporter"])
    return export.runner(path, "onnx")


def main() -> None:
    args = parse_key_values(
        sys.argv[1:], DEFAULTS, USAGE, required=("run",), kinds=KINDS, prog="dlrun-serve"
    )
    with errors_reported("dlrun-serve"), tempfile.TemporaryDirectory(prefix="dlrun-serve-") as tmp:
        app = build_app(args, Path(tmp))
        import uvicorn

        print(
            f"serving {args['run']} ({args['runtime']}) on http://{args['host']}:{args['port']}"
            f"  (docs: /docs)",
            flush=True,
        )
        with stop_signals_handled_by(_stop):  # uvicorn shuts down, then re-raises
            uvicorn.run(app, host=args["host"], port=args["port"], log_level="warning")


def _stop(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C. While serving, uvicorn shuts down gracefully, re-raises the
    signal here and takes the KeyboardInterrupt as a normal stop: exit 0, as for Ctrl-C
    (SIGTERM's default would kill the process with 143 after the shutdown). Before the
    server is up it is an interruption: one line and 130."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
