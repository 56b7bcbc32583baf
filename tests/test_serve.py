"""dlrun-serve: a real uvicorn server on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import train_run

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ROW = {"sepal length (cm)": 6.7, "sepal width (cm)": 3.0, "petal length (cm)": 5.2,
       "petal width (cm)": 2.3}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("serve") / "iris"
    train_run(run_dir, "model=mlp", "data=iris", "trainer.epochs=3")
    return run_dir


def _serve(run_dir: Path, *args: str) -> Iterator[str]:
    """Start dlrun-serve on a free port of 127.0.0.1; yield its URL; stop it."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.serve_cli", f"run={run_dir}", f"port={port}",
         "threads=1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the server never answered /health"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(iris_run: Path) -> Iterator[str]:
    yield from _serve(iris_run, "max_inputs=50", "max_body_mb=0.01")


def test_predict_one_or_many_inputs(server: str, iris_run: Path) -> None:
    one = httpx.post(f"{server}/predict", json={"input": ROW})
    many = httpx.post(f"{server}/predict", json={"inputs": [ROW, [5.1, 3.5, 1.4, 0.2]]})
    assert one.status_code == 200 and many.status_code == 200, many.text
    first = many.json()["predictions"][0]
    alone = one.json()["predictions"][0]  # the same up to float32 sums in another batch
    assert alone["label"] == first["label"]
    assert list(alone["probabilities"].values()) == pytest.approx(
        list(first["probabilities"].values()), abs=1e-6
    )
    assert set(first["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert first["label"] == max(first["probabilities"], key=first["probabilities"].get)
    assert sum(first["probabilities"].values()) == pytest.approx(1.0)


def test_the_server_answers_as_dlrun_predict_does(
    server: str, iris_run: Path, tmp_path: Path
) -> None:
    import numpy as np

    from dlrun.predict_cli import DEFAULTS, predict_saved

    np.save(tmp_path / "row.npy", np.array([list(ROW.values())]))
    out, _ = predict_saved({**DEFAULTS, "run": str(iris_run), "input": str(tmp_path / "row.npy")})
    line = (out / "predictions.csv").read_text().splitlines()[1].split(",")
    served = httpx.post(f"{server}/predict", json={"input": ROW}).json()["predictions"][0]
    assert [float(v) for v in line[4:]] == pytest.approx(
        list(served["probabilities"].values()), abs=1e-6
    )


def test_health_metadata_and_openapi(server: str, iris_run: Path) -> None:
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    meta = httpx.get(f"{server}/metadata").json()
    trained = json.loads((iris_run / "metrics.json").read_text())["test"]
    assert meta["test_metrics"]["accuracy"] == pytest.approx(trained["accuracy"])
    assert meta["model_inputs"] == [{"name": "x", "shape": ["N", 4], "dtype": "float32"}]
    assert [c["name"] for c in meta["preprocess"]["numeric"]] == list(ROW)
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "send a JSON object"),
        (b"{}", 422, "inputs"),
        (b'{"inputs": 5}', 422, "inputs"),
        (b'{"inputs": [[1, 2]]}', 422, "has 2 values; the model takes 4"),
        (b'{"inputs": [{"sepal length (cm)": 1}]}', 422, "lacks column(s)"),
        (b'{"inputs": [["a", "b", "c", "d"]]}', 422, "holds numbers"),
        (json.dumps({"inputs": [[1, 2, 3, 4]] * 60}).encode()[:300], 400, "not valid JSON"),
        (json.dumps({"inputs": [[1, 2, 3, 4]] * 60}).encode(), 413, "at most 50"),
        (json.dumps({"inputs": [ROW] * 200}).encode(), 413, "bytes; at most"),
    ],
)
def test_bad_payloads_get_a_4xx_and_the_server_stays_up(
    server: str, body: bytes, status: int, message: str
) -> None:
    answer = httpx.post(f"{server}/predict", content=body,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_concurrent_requests_all_get_their_own_answer(server: str) -> None:
    rows = [[5.0 + i / 10, 3.0, 1.0 + i / 5, 0.2 + i / 10] for i in range(16)]
    alone = [httpx.post(f"{server}/predict", json={"input": r}).json() for r in rows]
    with ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda r: httpx.post(f"{server}/predict", json={"input": r}).json(), rows)
        )
    for a, b in zip(together, alone, strict=True):
        pa, pb = a["predictions"][0]["probabilities"], b["predictions"][0]["probabilities"]
        assert list(pa.values()) == pytest.approx(list(pb.values()), abs=1e-6)


def test_the_batcher_runs_waiting_requests_as_one_batch() -> None:
    import torch

    from dlrun.serve import Batcher

    calls: list[int] = []

    def backend(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        calls.append(len(batch[0]))
        return batch[0] * 2

    async def scenario() -> list[torch.Tensor]:
        batcher = Batcher(backend, max_batch=64)
        worker = asyncio.create_task(batcher.run_forever())
        requests = [batcher.submit((torch.full((k, 1), float(k)),)) for k in (1, 2, 3)]
        answers = await asyncio.gather(*requests)
        worker.cancel()
        return answers

    answers = asyncio.run(scenario())
    assert [a.flatten().tolist() for a in answers] == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]
    assert calls == [6]  # three requests, one model call


def test_the_onnx_runtime_serves_the_same_answers(server: str, iris_run: Path) -> None:
    pytest.importorskip("onnxruntime")
    expected = httpx.post(f"{server}/predict", json={"input": ROW}).json()["predictions"]
    for url in _serve(iris_run, "runtime=onnx", "exporter=legacy"):
        answer = httpx.post(f"{url}/predict", json={"input": ROW}).json()
        assert answer["runtime"] == "onnx"
        got = answer["predictions"][0]["probabilities"]
        assert list(got.values()) == pytest.approx(
            list(expected[0]["probabilities"].values()), abs=1e-5
        )


def test_bad_arguments_stop_before_serving(iris_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dlrun.serve_cli", f"run={iris_run}", "runtime=tflite"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "runtime=tflite is invalid" in result.stderr
