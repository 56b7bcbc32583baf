"""Load-test ``dlrun-serve`` from a client on 127.0.0.1 and compare with the model in-process.

    python scripts/bench_serve.py [--run <run dir>] [--batch 64] [--requests 200]
                                  [--concurrency 8] [--runtime torch|onnx]

Without --run it first trains a small run (LeNet-5 on digits, 2 epochs) into a
temporary folder. The server runs in its own process (uvicorn, a free port on
127.0.0.1); the load is bounded (a fixed number of requests from a few client
threads). Printed: requests/s, samples/s and p50/p99 latency for single-input and
batched requests, next to the model called in-process on the same batch (forward
pass only), and their ratio. Inputs are random values of the run's raw input shape.
Both sides use --threads torch threads (default 1: on a shared machine, torch's default
of one thread per core can make each small forward pass 100x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def train_default(root: Path) -> Path:
    run_dir = root / "lenet_digits"
    command = [sys.executable, "-m", "dlrun.cli", "model=lenet", "data=digits",
               "trainer.epochs=2", "trainer.progress=none", f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return run_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(run_dir: Path, port: int, runtime: str, threads: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "dlrun.serve_cli", f"run={run_dir}", f"port={port}",
               f"runtime={runtime}", "exporter=legacy", f"threads={threads}"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_up(client: Any, proc: subprocess.Popen, url: str, attempts: int = 600) -> None:
    import httpx

    for _ in range(attempts):
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if client.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not answer /health")


def sample_inputs(contract: Any, n: int, seed: int = 0) -> list[Any]:
    """Random raw inputs of the run's kind (what a client would send)."""
    rng = np.random.default_rng(seed)
    steps, kind = contract.steps, contract.kind
    if kind == "image":
        shape = (steps["channels"], *steps["size"])
        return [rng.uniform(0, 1, shape).round(4).tolist() for _ in range(n)]
    if kind == "table":
        rows = []
        for _ in range(n):
            row = {c["name"]: c["mean"] + c["std"] * rng.normal() for c in steps["numeric"]}
            rows.append(row | {c["name"]: c["categories"][0] for c in steps["categorical"]})
        return rows
    if kind == "text":
        vocab = [c for c in steps["vocab"] if c.isprintable()]
        return ["".join(rng.choice(vocab, steps["block_size"])) for _ in range(n)]
    if kind == "series":
        width = len(steps["columns"])
        return [rng.normal(steps["mean"], steps["std"], (steps["window"], width)).tolist()
                for _ in range(n)]  # fmt: skip
    if kind == "sequence":
        return [rng.normal(size=steps["max_length"]).tolist() for _ in range(n)]
    raise SystemExit(f"no sample inputs for {kind} data")


def in_process(predictor: Any, inputs: list[Any], repeats: int) -> float:
    """Median seconds of one forward pass over ``inputs`` as one batch."""
    import torch

    from dlrun.data.inputs import from_values
    from dlrun.export_cli import model_args

    encoded = from_values(inputs, predictor.contract)
    args = model_args(predictor.contract, encoded.x, encoded.lengths)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 2):
            start = time.perf_counter()
            predictor.model(*args)
            times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def load(client: Any, url: str, payloads: list[str], concurrency: int) -> tuple[float, list]:
    """Send every payload (``concurrency`` at a time); wall seconds and latencies."""

    def send(body: str) -> float:
        start = time.perf_counter()
        response = client.post(
            f"{url}/predict", content=body, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(send, payloads))
    return time.perf_counter() - start, latencies


def measure(client: Any, url: str, predictor: Any, args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch, count in ((1, args.requests), (args.batch, max(10, args.requests // 5))):
        inputs = sample_inputs(predictor.contract, batch)
        payloads = [json.dumps({"inputs": inputs})] * count
        load(client, url, payloads[: min(10, count)], args.concurrency)  # warm-up
        wall, latencies = load(client, url, payloads, args.concurrency)
        model_s = in_process(predictor, inputs, args.repeats)
        served = count * batch / wall
        rows.append({
            "batch": batch, "requests": count, "req_per_s": count / wall,
            "samples_per_s": served, "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            "in_process_samples_per_s": batch / model_s,
            "ratio": (batch / model_s) / served,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = parser.parse_args()
    import httpx
    import torch

    torch.set_num_threads(args.threads)
    from dlrun.predictor import load_predictor

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or train_default(Path(tmp))
        predictor = load_predictor(run_dir, device="cpu")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(run_dir, port, args.runtime, args.threads)
        try:
            with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
                wait_until_up(client, proc, url)
                rows = measure(client, url, predictor, args)
        finally:
            proc.terminate()
            proc.wait()
    print(f"run: {run_dir} ({predictor.contract.spec.name}, runtime={args.runtime}, "
          f"{args.concurrency} client threads, torch threads {args.threads}, "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    columns = ("batch", "requests", "req/s", "samples/s", "p50 ms", "p99 ms",
               "in-process samples/s", "in-process / served")  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * 8)
    for r in rows:
        print(f"| {r['batch']} | {r['requests']} | {r['req_per_s']:.1f} | {r['samples_per_s']:.0f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['in_process_samples_per_s']:.0f} "
              f"| {r['ratio']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
