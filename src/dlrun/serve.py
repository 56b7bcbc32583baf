"""The HTTP app behind ``dlrun-serve``: FastAPI routes, request checks and batching.

- ``POST /predict`` takes ``{"inputs": [...]}`` (or ``{"input": ...}`` for one) in the
  run's raw units: table rows as ``{"column": value}`` objects (or lists in column
  order), images as nested lists (C, H, W) or (H, W) with values in [0, 1] or 0-255,
  text as strings, a series' recent steps for a forecast, sequences as lists. Each
  input is preprocessed exactly as in training (:mod:`dlrun.data.inputs`).
- ``GET /health``, ``GET /metadata`` (the input contract and the run's test metrics),
  and FastAPI's OpenAPI docs (``/docs``, ``/openapi.json``).

Bad requests get a 4xx with a one-line ``detail`` and never reach the model: not JSON
(400), a wrong shape, type or column (422), a body over ``max_body_bytes`` or more than
``max_inputs`` inputs (413). An error inside the model is a 500 for that request only.

Batching: requests are queued and one worker takes everything waiting (up to
``max_batch`` rows) into one model call, so concurrent clients share a forward pass
and no request waits for a timer when the server is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dlrun.errors import UserError
from dlrun.rundir import read_json_dict

Backend = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much one model call may take."""

    max_inputs: int = 1024
    max_body_bytes: int = 8 << 20
    max_batch: int = 256


class PredictRequest(BaseModel):
    """One input (``input``) or several (``inputs``), in the run's raw units."""

    inputs: list[Any] | None = Field(default=None, description="several inputs")
    input: Any = Field(default=None, description="one input (instead of inputs)")


class Batcher:
    """Queue of pending requests; a worker runs everything waiting as one batch."""

    def __init__(self, backend: Backend, max_batch: int) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlrun-model")
        self.batches = 0

    async def submit(self, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((args, future))
        return await future

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            rows = len(items[0][0][0])
            while rows < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                items.append(item)
                rows += len(item[0][0])
            await self._run(loop, items)

    async def _run(self, loop: asyncio.AbstractEventLoop, items: list) -> None:
        sizes = [len(args[0]) for args, _ in items]
        batch = tuple(torch.cat(parts) for parts in zip(*(a for a, _ in items), strict=True))
        try:
            outputs = await loop.run_in_executor(self.pool, self.backend, batch)
        except Exception as exc:  # every waiting request learns it failed
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        for (_, future), part in zip(items, outputs.split(sizes), strict=True):
            if not future.done():
                future.set_result(part)


def create_app(predictor: Any, backend: Backend, runtime: str, limits: Limits) -> FastAPI:
    """The app serving ``predictor`` through ``backend`` (the torch model or a runtime)."""
    from contextlib import asynccontextmanager

    batcher = Batcher(backend, limits.max_batch)
    metadata = describe(predictor, runtime, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        worker = asyncio.create_task(batcher.run_forever())
        yield
        worker.cancel()
        batcher.pool.shutdown(wait=False)

    app = FastAPI(
        title=f"dlrun: {predictor.run_dir.name}",
        description=f"{metadata['task']} model on {metadata['dataset']} data",
        lifespan=lifespan,
    )
    _add_error_handlers(app, limits)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "batches": batcher.batches}

    @app.get("/metadata")
    def get_metadata() -> dict[str, Any]:
        return metadata

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        values = _values(request, limits)
        args = await run_in_threadpool(_encode, predictor, values)
        outputs = await batcher.submit(args)
        return {"predictions": answers(predictor, outputs), "runtime": runtime}

    return app


def _values(request: PredictRequest, limits: Limits) -> list[Any]:
    if request.inputs is None and request.input is None:
        raise UserError('send {"inputs": [...]} or {"input": ...}')
    values = request.inputs if request.inputs is not None else [request.input]
    if len(values) > limits.max_inputs:
        raise TooLarge(f"{len(values)} inputs; at most {limits.max_inputs} per request")
    return values


class TooLarge(UserError):
    """A request over the server's limits (HTTP 413)."""


def _encode(predictor: Any, values: list[Any]) -> tuple[torch.Tensor, ...]:
    from dlrun.data.inputs import from_values
    from dlrun.export_cli import model_args

    inputs = from_values(values, predictor.contract)
    return model_args(predictor.contract, inputs.x, inputs.lengths)


def answers(predictor: Any, outputs: torch.Tensor) -> list[dict[str, Any]]:
    """One answer per input: label and probabilities, label set, or values."""
    from dlrun.predict_cli import class_names
    from dlrun.predictor import interpret
    from dlrun.tasks import Targets, info

    task = predictor.task
    targets = info(task).targets
    threshold = predictor.cfg.eval.threshold
    scaler = predictor.contract.meta.get("target_scaler")
    scored = interpret(task, outputs.double(), threshold, scaler)
    n = len(outputs)
    if info(task).scaled:
        return [{"value": row} for row in scored.preds.reshape(n, -1).tolist()]
    names = class_names(predictor)
    probs = scored.scores.reshape(n, -1).tolist()
    if targets is Targets.BINARY:
        probs = [[1 - p[0], p[0]] for p in probs]
    out = []
    for pred, prob in zip(scored.preds.tolist(), probs, strict=True):
        if targets is Targets.LABELS:
            label: Any = [name for name, on in zip(names, pred, strict=True) if on]
        else:
            label = names[int(pred)]
        out.append({"label": label, "probabilities": dict(zip(names, prob, strict=True))})
    return out


def describe(predictor: Any, runtime: str, limits: Limits) -> dict[str, Any]:
    """``GET /metadata``: the input contract, how to send inputs, the test metrics."""
    from dlrun.data.contract import to_dict
    from dlrun.data.inputs import ACCEPTS
    from dlrun.export import input_signature

    contract = predictor.contract
    metrics_path = predictor.run_dir / "metrics.json"
    metrics = read_json_dict(metrics_path)
    return {
        "run": str(predictor.run_dir),
        "members": predictor.members,
        "runtime": runtime,
        "task": str(contract.spec.task),
        "dataset": contract.spec.name,
        "class_names": list(contract.spec.class_names),
        "input_kind": contract.kind,
        "input_files_for_dlrun_predict": ACCEPTS[contract.kind],
        "model_inputs": input_signature(contract),
        "preprocess": to_dict(contract)["preprocess"],
        "test_metrics": metrics.get("test", {}),
        "baseline": metrics.get("baseline", {}),
        "limits": limits.__dict__,
    }


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413 before the app reads
    it. The body is counted as it arrives, not only by its Content-Length: a chunked
    upload, which declares no length, could otherwise fill the memory; at most ``limit``
    bytes are ever held."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            what = f"request body of {int(declared)} bytes"
            return await self._refuse(what, scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                what = f"request body of at least {size} bytes"
                return await self._refuse(what, scope, receive, send)
            more = bool(message.get("more_body"))
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> dict:
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        return await self.app(scope, replay, send)

    async def _refuse(self, what: str, scope: dict, receive: Callable, send: Callable) -> None:
        response = JSONResponse({"detail": f"{what}; at most {self.limit}"}, status_code=413)
        await response(scope, receive, send)


def _add_error_handlers(app: FastAPI, limits: Limits) -> None:
    """Every bad request is a 4xx with one line of ``detail``; the server stays up."""

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if not where:  # the body itself is not an object
            return JSONResponse({"detail": 'send a JSON object: {"inputs": [...]}'}, 422)
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(UserError)
    async def refused(_: Request, exc: UserError) -> JSONResponse:
        status = 413 if isinstance(exc, TooLarge) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)
