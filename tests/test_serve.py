"""dlrun-serve: a real uvicorn server on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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


def _start(run_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """dlrun-serve on a free port of 127.0.0.1, once it answers /health; and its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.serve_cli", f"run={run_dir}", f"port={port}",
         "threads=1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the server never answered /health")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)


def _serve(run_dir: Path, *args: str) -> Iterator[str]:
    """Start dlrun-serve; yield its URL; stop it."""
    proc, url = _start(run_dir, *args)
    try:
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


def test_a_chunked_body_without_a_length_is_held_to_the_limit_too(server: str) -> None:
    row = json.dumps(ROW).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"input": ' + row + b', "padding": "'
        for _ in range(40):  # one input, but 40 KB: over max_body_mb=0.01
            yield b"x" * 1000
        yield b'"}'

    answer = httpx.post(f"{server}/predict", content=chunks(),
                        headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 413 and "at most 10485" in answer.json()["detail"]
    small = httpx.post(f"{server}/predict", content=iter([b'{"input": ', row, b"}"]),
                       headers={"content-type": "application/json"})  # fmt: skip
    assert small.status_code == 200, small.text
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


def test_a_failing_model_call_fails_its_requests_only() -> None:
    import torch

    from dlrun.serve import Batcher

    def backend(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if (batch[0] < 0).any():
            raise RuntimeError("bad batch")
        return batch[0] + 1

    async def scenario() -> list:
        batcher = Batcher(backend, max_batch=64)
        worker = asyncio.create_task(batcher.run_forever())
        results = []
        for x in (-torch.ones(2, 1), torch.ones(1, 1)):  # a failing call, then a good one
            request = asyncio.create_task(batcher.submit((x,)))
            await asyncio.wait({request, worker}, return_when=asyncio.FIRST_COMPLETED)
            assert not worker.done(), worker.exception()  # the worker must keep serving
            results.append(request.exception() or request.result())
        worker.cancel()
        return results

    error, after = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and after.tolist() == [[2.0]]


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


def test_bench_serve_measures_a_bounded_load(server: str, iris_run: Path) -> None:
    import argparse

    from dlrun.predictor import load_predictor
    from tests.conftest import load_script

    bench = load_script("bench_serve")
    predictor = load_predictor(iris_run, device="cpu")
    args = argparse.Namespace(requests=12, batch=5, concurrency=3, repeats=2)
    with httpx.Client() as client:
        rows = bench.measure(client, server, predictor, args)
    assert [(r["batch"], r["requests"]) for r in rows] == [(1, 12), (5, 10)]
    for row in rows:
        assert row["p50_ms"] <= row["p99_ms"] and row["samples_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["in_process_samples_per_s"] / row["samples_per_s"])


def test_sigterm_stops_the_server_gracefully_with_exit_0(iris_run: Path) -> None:
    import signal

    proc, url = _start(iris_run)
    assert httpx.post(f"{url}/predict", json={"input": ROW}).status_code == 200
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr  # not 143: uvicorn's re-raised SIGTERM is handled
    assert "Traceback" not in stderr


def test_bad_arguments_stop_before_serving(iris_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dlrun.serve_cli", f"run={iris_run}", "runtime=tflite"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "runtime=tflite is invalid" in result.stderr


# --- every input kind, and an ensemble, answer as dlrun-predict does -----------------
# In process (the same app, its lifespan and batcher, through httpx's ASGI transport):
# the real-socket behaviour is covered above; here it is what each kind of input becomes.


def _waves() -> list[list[float]]:
    rng = np.random.default_rng(1)
    return [rng.normal(size=n).round(3).tolist() for n in (30, 100, 64)]


def _sine() -> list[float]:
    return np.sin(np.arange(120) / 4.0).round(4).tolist()


KINDS = {  # name: (training overrides, JSON inputs, file for dlrun-predict)
    "image": (["model=lenet", "data=digits"],
              lambda: (np.arange(2 * 64).reshape(2, 8, 8) % 17 / 16.0).tolist(),
              lambda values, path: np.save(path / "x.npy", np.array(values, np.float32))),
    "text": (["model=cnn1d", "data=text_classes"],
             lambda: ["format(value, spec) returns a string", "break at line 3"],
             lambda values, path: (path / "x.txt").write_text("\n".join(values) + "\n")),
    "series": (["model=gru", "data=sine"], lambda: [_sine()],
               lambda values, path: np.save(path / "x.npy", np.array(values[0]))),
    "sequence": (["model=lstm", "data=waveforms"], _waves,
                 lambda values, path: np.savez(
                     path / "x.npz", x=np.array([v + [0.0] * (100 - len(v)) for v in values]),
                     lengths=np.array([len(v) for v in values]))),
    "ensemble": (["model=mlp", "data=iris"],
                 lambda: [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
                 lambda values, path: np.save(path / "x.npy", np.array(values))),
}  # fmt: skip


def _predicted_rows(run_dir: Path, tmp_path: Path, values: list, write: object) -> list[list]:
    """dlrun-predict's rows (prediction and probabilities) for the same inputs."""
    from dlrun.predict_cli import DEFAULTS, predict_saved

    write(values, tmp_path)  # type: ignore[operator]
    (source,) = [p for p in tmp_path.iterdir() if p.name.startswith("x.")]
    out, _ = predict_saved({**DEFAULTS, "run": str(run_dir), "input": str(source)})
    with (out / "predictions.csv").open() as handle:
        return [row[3:] for row in list(csv.reader(handle))[1:]]


async def _in_process(app: object, values: list) -> list:
    """POST ``values``, GET /metadata and POST a wrong input, with the app's lifespan."""
    async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            return [
                await client.post("/predict", json={"inputs": values}),
                await client.get("/metadata"),
                await client.post("/predict", json={"inputs": [{"not": "this"}]}),
            ]


def _trained(tmp_path: Path, overrides: list[str], members: int) -> Path:
    """A small run, or an ensemble dir (dlrun-ensemble) of ``members`` such runs."""
    shrink = ["trainer.epochs=1", "trainer.limit_batches=2"]
    if not members:
        train_run(tmp_path / "run", *overrides, *shrink)
        return tmp_path / "run"
    from dlrun.ensemble_cli import DEFAULTS, build

    runs = [tmp_path / f"member{i}" for i in range(members)]
    for i, run in enumerate(runs):
        train_run(run, *overrides, *shrink, f"optimizer.lr={0.01 * (i + 1)}")
    out, _ = build(
        {**DEFAULTS, "runs": f"[{','.join(map(str, runs))}]", "out": str(tmp_path / "ens")}
    )
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_input_kind_is_served_as_dlrun_predict_reads_its_file(
    kind: str, tmp_path: Path
) -> None:
    from dlrun.serve_cli import DEFAULTS, build_app

    overrides, make_values, write = KINDS[kind]
    run_dir = _trained(tmp_path, overrides, members=2 if kind == "ensemble" else 0)
    values = make_values()
    expected = _predicted_rows(run_dir, tmp_path, values, write)
    if kind == "series":
        expected = expected[-1:]  # a served series gets the forecast past its end
    app = build_app({**DEFAULTS, "run": str(run_dir)}, tmp_path)
    answer, meta, wrong = asyncio.run(_in_process(app, values))
    assert answer.status_code == 200, answer.text
    got = answer.json()["predictions"]
    assert len(got) == len(expected)
    for served, row in zip(got, expected, strict=True):
        if "value" in served:
            assert served["value"] == pytest.approx([float(v) for v in row[0:1]], abs=1e-4)
        else:
            assert served["label"] == row[0]
            probs = list(served["probabilities"].values())
            assert probs == pytest.approx([float(v) for v in row[1:]], abs=1e-5)
    meta = meta.json()
    assert meta["input_kind"] == ("table" if kind == "ensemble" else kind)
    assert len(meta["members"]) == (2 if kind == "ensemble" else 0)
    assert wrong.status_code == 422 and "\n" not in wrong.json()["detail"]
