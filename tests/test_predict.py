"""dlrun-predict: new data preprocessed as in training, from the run dir alone."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHRINK, run_tool, train_run


def _predict(**args: object) -> tuple[Path, dict]:
    from dlrun.predict_cli import DEFAULTS, predict_saved

    return predict_saved({**DEFAULTS, **{k: str(v) for k, v in args.items()}})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _probs(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- a user's CSV: the run dir alone predicts the same numbers ----------------------


def _people(n: int = 160) -> tuple[list[str], list[list[object]]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        age = round(float(rng.uniform(18, 80)), 1)
        city = ["north", "south", "east"][i % 3] if i % 11 else ""
        income = "" if i % 7 == 0 else round(float(rng.normal(50, 10)), 2)
        label = "yes" if age / 80 + (city == "north") * 0.4 + rng.normal(0, 0.2) > 0.8 else "no"
        rows.append([i, age, income, city, label])
    return ["id", "age", "income", "city", "label"], rows


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[object]]]:
    """A run trained on a CSV that no longer exists, moved to another folder."""
    root = tmp_path_factory.mktemp("csv")
    header, rows = _people()
    data = _write_csv(root / "people.csv", header, rows)
    train_run(root / "trained", "model=mlp", "data=csv", f"data.path={data}",
              "data.target=label", "data.drop=[id]", *SHRINK)  # fmt: skip
    moved = root / "elsewhere" / "run"
    shutil.copytree(root / "trained", moved)
    shutil.rmtree(root / "trained")
    data.unlink()  # predict needs nothing but the run dir
    return moved, rows


def test_a_copied_run_predicts_its_own_test_split_exactly(csv_run, tmp_path: Path) -> None:
    from dlrun.data.splits import stratified_split

    run_dir, rows = csv_run
    labels = np.array([0 if r[-1] == "no" else 1 for r in rows])
    test = stratified_split(labels, 0, 0.15, 0.15).test
    # the same rows, columns in another order, plus a column the model never saw
    header = ["label", "city", "note", "income", "age"]
    new = [[rows[i][4], rows[i][3], "x", rows[i][2], rows[i][1]] for i in test]
    out, summary = _predict(run=run_dir, input=_write_csv(tmp_path / "new.csv", header, new))
    assert (
        np.abs(
            _probs(_rows(out / "predictions.csv")) - _probs(_rows(run_dir / "predictions.csv"))
        ).max()
        < 1e-6
    )
    scored = json.loads((out / "metrics.json").read_text())["test"]
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert scored["accuracy"] == pytest.approx(trained["accuracy"])
    assert summary["scored"] == len(test)
    assert any("ignored" in n and "note" in n for n in summary["notes"])


def test_unseen_categories_and_missing_target_cells_are_named(csv_run, tmp_path: Path) -> None:
    run_dir, _ = csv_run
    new = _write_csv(tmp_path / "odd.csv", ["age", "income", "city", "label"],
                     [[30, 40, "mars", ""], [70, "", "north", "yes"]])  # fmt: skip
    out, summary = _predict(run=run_dir, input=new, out=tmp_path / "preds")
    notes = " ".join(summary["notes"])
    assert "mars" in notes and "median" in notes and "not scored" in notes
    rows = _rows(out / "predictions.csv")
    assert [r["target"] for r in rows] == ["", "yes"] and len(rows) == 2


def test_missing_columns_are_one_line_and_leave_nothing(csv_run, tmp_path: Path) -> None:
    run_dir, _ = csv_run
    new = _write_csv(tmp_path / "short.csv", ["age", "label"], [[30, "no"]])
    result = run_tool("dlrun.predict_cli", f"run={run_dir}", f"input={new}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks column(s)" in lines[0] and "income, city" in lines[0]
    assert not (run_dir / "predict" / "short").exists()


# --- images -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    train_run(run_dir, "model=lenet", "data=digits", *SHRINK)
    return run_dir


def _digits_test() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    from dlrun.data.splits import stratified_split

    raw = load_digits()
    test = stratified_split(raw.target, 0, 0.15, 0.15).test
    return raw.images[test] / 16.0, raw.target[test]


def test_images_as_npy_give_the_runs_own_probabilities(digits_run, tmp_path: Path) -> None:
    images, _ = _digits_test()
    np.save(tmp_path / "test.npy", images.astype(np.float32))
    out, _ = _predict(run=digits_run, input=tmp_path / "test.npy")
    got, expected = (
        _probs(_rows(out / "predictions.csv")),
        _probs(_rows(digits_run / "predictions.csv")),
    )
    assert np.abs(got - expected).max() < 1e-5


def test_a_folder_of_pngs_with_class_subfolders_is_scored(digits_run, tmp_path: Path) -> None:
    from PIL import Image

    images, labels = _digits_test()
    for i, (image, label) in enumerate(zip(images[:40], labels[:40], strict=True)):
        (tmp_path / "pngs" / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
        pixels = pixels.resize((16, 16)) if i == 0 else pixels  # one of another size
        pixels.save(tmp_path / "pngs" / str(label) / f"{i}.png")
    out, summary = _predict(run=digits_run, input=tmp_path / "pngs")
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 40 and summary["scored"] == 40
    assert {r["target"] for r in rows} <= {str(d) for d in range(10)}
    assert any("resized to 8x8" in n for n in summary["notes"])
    assert (out / "confusion_matrix.png").is_file()


def test_pixels_out_of_range_are_refused(digits_run, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.full((2, 8, 8), 7.5, dtype=np.float32))
    result = run_tool("dlrun.predict_cli", f"run={digits_run}", f"input={tmp_path / 'bad.npy'}")
    assert result.returncode == 2 and "must lie in [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr


# --- text, series, padded sequences ---------------------------------------------------


def test_text_lines_are_classified(tmp_path: Path) -> None:
    run_dir = tmp_path / "text"
    train_run(run_dir, "model=cnn1d", "data=text_classes", *SHRINK)
    lines = tmp_path / "snippets.txt"
    lines.write_text("format(value, spec) returns a string\n\nbreak at line 3 ✓\n")
    out, summary = _predict(run=run_dir, input=lines)
    rows = _rows(out / "predictions.csv")
    assert [r["input"] for r in rows] == ["line 1", "line 3"]  # the blank line is skipped
    assert all(r["prediction"] in ("debugger", "formatstrings", "string-methods", "typesseq")
               for r in rows)  # fmt: skip
    assert any("never saw" in n and "✓" in n for n in summary["notes"])


def test_a_series_gets_every_forecast_and_the_known_ones_scored(tmp_path: Path) -> None:
    from dlrun.data.series import load_sine

    run_dir = tmp_path / "sine"
    train_run(run_dir, "model=gru", "data=sine", *SHRINK)
    bundle = load_sine(0)
    start = bundle.meta["split_bounds"]["test"][0]
    series = _series_values()[start:]
    path = _write_csv(tmp_path / "series.csv", ["value"], [[v] for v in series])
    out, summary = _predict(run=run_dir, input=path)
    rows = _rows(out / "predictions.csv")
    trained = _rows(run_dir / "predictions.csv")
    assert len(rows) == len(trained) + 1  # one more: the forecast past the end
    assert rows[-1]["target"] == "" and summary["scored"] == len(trained)
    predicted = np.array([float(r["prediction"]) for r in rows[:-1]])
    assert np.abs(predicted - np.array([float(r["prediction"]) for r in trained])).max() < 1e-4


def _series_values() -> np.ndarray:
    """The raw sine series data=sine generates (its generator, without the split)."""
    import math

    rng = np.random.default_rng(0)
    steps = np.arange(2000)
    phases = rng.uniform(0.0, 2 * math.pi, 2)
    waves = [np.sin(2 * math.pi * steps / p + f) for p, f in zip((24.0, 70.0), phases, strict=True)]
    return np.sum(waves, axis=0) + 0.1 * rng.standard_normal(2000)


def test_padded_sequences_from_an_npz_with_lengths(tmp_path: Path) -> None:
    run_dir = tmp_path / "waves"
    train_run(run_dir, "model=lstm", "data=waveforms", *SHRINK)
    x = np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32)
    np.savez(tmp_path / "waves.npz", x=x, lengths=np.array([40, 100, 70]),
             y=np.array(["sine", "square", "sawtooth"]))  # fmt: skip
    out, summary = _predict(run=run_dir, input=tmp_path / "waves.npz")
    assert [r["target"] for r in _rows(out / "predictions.csv")] == ["sine", "square", "sawtooth"]
    assert summary["scored"] == 3
    np.save(tmp_path / "long.npy", np.zeros((1, 101), dtype=np.float32))
    result = run_tool("dlrun.predict_cli", f"run={run_dir}", f"input={tmp_path / 'long.npy'}")
    assert result.returncode == 2 and "1 to 100 steps" in result.stderr


def test_a_language_model_points_to_generate() -> None:
    from dlrun.data.contract import Contract
    from dlrun.data.inputs import from_values
    from dlrun.data.spec import DataKind, DataSpec, Task
    from dlrun.errors import UserError

    spec = DataSpec("text", Task.LANGUAGE_MODEL, DataKind.TOKENS, (8,), 3, vocab_size=3)
    with pytest.raises(UserError, match="dlrun-generate"):
        from_values(["abc"], Contract(spec, {"type": "text", "vocab": ["a", "b", "c"]}))


ARRAY_LAYOUTS = {  # raw rows of data=array as a user saves them
    "tabular": lambda rng: rng.normal(size=(60, 5)),
    "flat": lambda rng: rng.normal(size=(60, 2, 3)).astype(np.float32),  # kind=tabular
    "channels-last uint8": lambda rng: rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8),
    "one channel": lambda rng: rng.integers(0, 256, (60, 9, 9), dtype=np.uint8),
    "tokens": lambda rng: rng.integers(0, 30, (60, 7)),
}


@pytest.mark.parametrize("layout", list(ARRAY_LAYOUTS))
def test_an_array_run_reads_new_rows_exactly_as_its_training_rows(
    layout: str, tmp_path: Path
) -> None:
    """The raw test rows, given to predict as a .npz, become the very tensors the run was
    tested on (reshaped and standardised by data=array's own code), with their targets."""
    from dlrun.data.arrays import load_array
    from dlrun.data.contract import contract_of
    from dlrun.data.folders import class_split
    from dlrun.data.inputs import from_values, read_inputs

    rng = np.random.default_rng(0)
    x, y = ARRAY_LAYOUTS[layout](rng), np.arange(60) % 3
    kind = {"flat": "tabular", "tokens": "tokens"}.get(layout, "auto")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    bundle = load_array(seed=2, path=str(tmp_path / "train.npz"), kind=kind)
    test = class_split(y, 2, 0.15, 0.15).test
    contract = contract_of(bundle)
    np.savez(tmp_path / "new.npz", features=x[test], labels=y[test])  # data=array's key names
    got = read_inputs(tmp_path / "new.npz", contract)
    assert torch.equal(got.x, bundle.test.x) and torch.equal(got.y, bundle.test.y)
    served = from_values([x[test[0]].tolist()], contract)
    assert torch.equal(served.x[0], bundle.test.x[0])


def test_array_rows_of_another_shape_or_kind_are_refused_in_one_line(tmp_path: Path) -> None:
    from dlrun.data.arrays import load_array
    from dlrun.data.contract import contract_of
    from dlrun.data.inputs import from_values, read_inputs
    from dlrun.errors import UserError

    pixels = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", x=pixels, y=np.arange(30) % 2)
    contract = contract_of(load_array(seed=0, path=str(tmp_path / "train.npz")))
    np.save(tmp_path / "chw.npy", pixels.transpose(0, 3, 1, 2))
    with pytest.raises(UserError, match=r"the run's rows were \(N, 8, 8, 3\)"):
        read_inputs(tmp_path / "chw.npy", contract)
    with pytest.raises(UserError, match="uint8 pixels"):
        from_values([(pixels[0] / 255).tolist()], contract)
    tokens = np.random.default_rng(0).integers(0, 30, (30, 7))
    np.savez(tmp_path / "tokens.npz", x=tokens, y=np.arange(30) % 2)
    contract = contract_of(load_array(seed=0, path=str(tmp_path / "tokens.npz"), kind="tokens"))
    with pytest.raises(UserError, match=r"token ids must lie in \[0, 30\)"):
        from_values([[0, 1, 2, 3, 4, 5, 30]], contract)
    from_values([[0, 1, 2, 3, 4, 5, 29]], contract)  # the largest id the run saw


@pytest.mark.parametrize("crop", [False, True])
def test_an_image_folder_run_reads_new_files_exactly_as_its_training_images(
    tmp_path: Path, crop: bool
) -> None:
    """Each test image, given to predict as a file, becomes the very tensor the run was
    tested on: decoded, cropped, resized and standardised the same way."""
    from dlrun.data.contract import contract_of
    from dlrun.data.folders import scan
    from dlrun.data.image_folder import load_image_folder
    from dlrun.data.imagefile import IMAGE_EXTENSIONS
    from dlrun.data.inputs import read_inputs
    from tests.owndata import write_images

    root = write_images(
        tmp_path / "pics", {"cat": 12, "dog": 12}, formats=("png", "jpg"),
        sizes=((20, 14), (9, 16), (12, 12)), mode="RGB",
    )  # fmt: skip
    bundle = load_image_folder(seed=3, root=str(root), size=10, crop=crop)
    folder = scan(str(root), IMAGE_EXTENSIONS, "image")
    test_files = [folder.paths[row] for row in folder.split(3, 0.15, 0.15).test]
    contract = contract_of(bundle)
    for row, path in enumerate(test_files):
        got = read_inputs(Path(path), contract)
        assert torch.equal(got.x[0], bundle.test.x[row]), path
    labelled = read_inputs(root, contract)  # class folders give the targets
    assert len(labelled) == 24 and labelled.y is not None and labelled.notes == []


def test_a_text_folder_run_reads_new_documents_exactly_as_its_training_ones(
    tmp_path: Path,
) -> None:
    from dlrun.data.contract import contract_of
    from dlrun.data.folders import scan
    from dlrun.data.inputs import from_values, read_inputs
    from dlrun.data.text_folder import load_text_folder
    from tests.owndata import write_texts

    root = write_texts(tmp_path / "docs", per_class=15)
    (root / "sport" / "000.txt").write_text("  Goal GOAL!  unseenword\n", encoding="utf-8")
    bundle = load_text_folder(seed=1, root=str(root), max_length=12)
    folder = scan(str(root), frozenset({".txt"}), "text")
    test_files = [folder.paths[row] for row in folder.split(1, 0.15, 0.15).test]
    contract = contract_of(bundle)
    for row, path in enumerate(test_files):
        got = read_inputs(Path(path), contract)
        assert torch.equal(got.x[0], bundle.test.x[row]), path
        assert got.lengths is not None and int(got.lengths[0]) == int(bundle.test.lengths[row])
    served = from_values(["goal goal unseenword " * 5], contract)
    assert served.x.shape == (1, 12) and int(served.lengths[0]) == 12
    assert any("not in the run's vocabulary" in n for n in served.notes)
    assert any("the first 12 are used" in n for n in served.notes)


def test_a_run_from_before_contract_json_is_rebuilt_from_its_data(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    train_run(run_dir, "model=mlp", "data=iris", *SHRINK)
    (run_dir / "contract.json").unlink()
    np.save(tmp_path / "x.npy", np.array([[5.1, 3.5, 1.4, 0.2]]))
    out, summary = _predict(run=run_dir, input=tmp_path / "x.npy")
    assert any("rebuilt from its data config" in n for n in summary["notes"])
    assert len(_rows(out / "predictions.csv")) == 1


def test_ckpt_last_predicts_with_the_last_weights(tmp_path: Path) -> None:
    import torch

    run_dir = tmp_path / "run"
    train_run(run_dir, "model=mlp", "data=iris", *SHRINK)
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["model"] = {k: -v if v.is_floating_point() else v for k, v in state["model"].items()}
    last.unlink()  # a hard link to best.pt after one epoch: write a new file
    torch.save(state, last)  # last.pt now holds other weights than best.pt
    np.save(tmp_path / "x.npy", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
    best, _ = _predict(run=run_dir, input=tmp_path / "x.npy")
    changed, summary = _predict(run=run_dir, input=tmp_path / "x.npy", ckpt="last")
    assert summary["ckpt"] == "last"
    best_probs, last_probs = (_probs(_rows(d / "predictions.csv")) for d in (best, changed))
    assert np.abs(best_probs - last_probs).max() > 1e-3


NO_TORCH_PROBE = """
import importlib, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
try:  # main() itself: run as a script, the process would end without this finally
    importlib.import_module(module).main()
finally:
    print("TORCH_IMPORTED" if "torch" in sys.modules else "TORCH_NOT_IMPORTED")
"""


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("dlrun.predict_cli", ["run=nope", "input=x.csv"], "run dir not found: nope"),
        ("dlrun.predict_cli", ["run=.", "input=nope.csv"], "input not found: nope.csv"),
        ("dlrun.predict_cli", ["run=.", "input=.", "ckpt=middle"], "ckpt=middle is invalid"),
        ("dlrun.export_cli", ["run=nope"], "run dir not found: nope"),
        ("dlrun.serve_cli", ["run=nope"], "run dir not found: nope"),
        ("dlrun.ensemble_cli", ["runs=[nope,other]"], "run dir not found: nope, other"),
    ],
)
def test_a_mistyped_argument_is_refused_before_torch_is_imported(
    module: str, args: list[str], message: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE, module, *args],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    prog = "dlrun-" + module.split(".")[1].removesuffix("_cli")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"{prog}: error: {message}")
    assert "TORCH_NOT_IMPORTED" in result.stdout


def test_dlrun_predict_scores_a_labelled_folder_for_an_image_folder_run(tmp_path: Path) -> None:
    """The whole command on a run of the user's own images: class folders give targets,
    and the scores of the run's training folder match what it trained to."""
    from tests.owndata import write_images

    root = write_images(tmp_path / "pics", {"cat": 10, "dog": 10}, sizes=((12, 16),))
    run_dir = tmp_path / "run"
    train_run(run_dir, "model=mlp", "data=image_folder", f"data.root={root}", "data.size=8",
              "trainer.epochs=3")  # fmt: skip
    result = run_tool(
        "dlrun.predict_cli", f"run={run_dir}", f"input={root}", f"out={tmp_path / 'p'}"
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "p" / "predictions.csv").open()))
    assert len(rows) == 20 and rows[0]["input"] == "cat/000.png" and rows[0]["target"] == "cat"
    scored = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert scored["n_test"] == 20 and scored["test"]["accuracy"] > 0.5  # striped classes
