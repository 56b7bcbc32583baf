"""User CSV files: tabular (task detection, imputation, encoding, fit on train only) and
series (time order, gaps, dates), with UserErrors that name what to fix."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.data.csvfile import read_csv
from dlrun.data.series import load_csv_series
from dlrun.data.spec import DataKind, Task
from dlrun.data.table import feature_names
from dlrun.data.tabular_csv import _encode_features, load_csv
from dlrun.errors import UserError


def write_csv(path: Path, header: list[str], rows: list[list]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def people(tmp_path) -> str:
    """300 rows: numeric and categorical features with gaps, three kinds of target."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        age = "" if i % 17 == 0 else f"{rng.normal(40, 10):.1f}"
        city = "NA" if i % 23 == 0 else "abc"[i % 3]
        income = 1000 + 30 * i + rng.normal(0, 50)  # many distinct values -> regression
        rows.append([i, age, city, f"{income:.2f}", "yes" if i % 2 else "no", i % 3])
    header = ["id", "age", "city", "income", "bought", "tier"]
    return write_csv(tmp_path / "people.csv", header, rows)


def test_auto_task_detection(people):
    binary = load_csv(0, path=people, target="bought", drop=["id", "tier"])
    assert binary.spec.task is Task.BINARY and binary.spec.n_outputs == 1
    assert binary.spec.class_names == ("no", "yes") and binary.train.y.dtype == torch.float32
    multi = load_csv(0, path=people, target="tier", drop=["id"])
    assert multi.spec.task is Task.MULTICLASS and multi.spec.class_names == ("0", "1", "2")
    assert multi.train.y.dtype == torch.int64
    regression = load_csv(0, path=people, target="income", drop=["id"])
    assert regression.spec.task is Task.REGRESSION and regression.train.y.shape[1] == 1
    assert abs(float(regression.train.y.mean())) < 1e-5
    assert regression.meta["target_scaler"]["mean"][0] > 1000
    assert regression.spec.kind is DataKind.TABULAR


def test_features_are_imputed_encoded_and_named(people):
    bundle = load_csv(0, path=people, target="bought", drop=["id"])
    names = bundle.meta["feature_names"]
    assert names[:3] == ["age", "income", "tier"]
    assert {"city_a", "city_b", "city_c", "city_missing"} <= set(names)
    assert bundle.spec.input_shape == (len(names),)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.float32 and torch.isfinite(split.x).all()
    numeric = bundle.train.x[:, :3]
    assert numeric.mean(0).abs().max() < 1e-4
    assert bundle.test.x[:, :3].mean(0).abs().max() > 1e-3  # scaled with train stats only
    onehot = bundle.train.x[:, 3:]
    assert torch.equal(onehot.sum(1), torch.ones(len(bundle.train)))


def test_statistics_are_fit_on_training_rows_only(tmp_path):
    # training rows 0-5; rows 6-7 (val/test) hold extreme values and an unseen category
    rows = [[1, "a"], [2, "a"], [3, "b"], ["", ""], [4, "b"], [5, "a"], [100, "z"], [200, "z"]]
    table = read_csv(write_csv(tmp_path / "t.csv", ["v", "c"], rows))
    x, state = _encode_features(table, ["v", "c"], np.arange(8), np.arange(6), 50)
    names = feature_names(state)
    assert names == ["v", "c_a", "c_b", "c_missing"]
    # the gap takes the training median (3), not the median of all rows (3.5)
    assert x[3, 0] == pytest.approx(x[2, 0])
    assert x[:6, 0].mean() == pytest.approx(0, abs=1e-6)
    assert x[6, 0] > 10  # far outside: scaled by training statistics
    assert x[6, 1:].tolist() == [0, 0, 0]  # unseen category -> all zeros
    assert x[3, 1:].tolist() == [0, 0, 1]  # missing category is its own column


def test_same_seed_same_split(people):
    a = load_csv(5, path=people, target="tier")
    b = load_csv(5, path=people, target="tier")
    c = load_csv(6, path=people, target="tier")
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)


def test_explicit_task_and_positive_class(people):
    bundle = load_csv(0, path=people, target="bought", positive_class="no")
    assert bundle.spec.class_names == ("yes", "no")
    as_multi = load_csv(0, path=people, target="bought", task="multiclass")
    assert as_multi.spec.task is Task.MULTICLASS and as_multi.spec.n_outputs == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "nope"}, "Column 'nope' .* its columns are: id, age"),
        ({"target": None}, "data.target"),
        ({"target": "bought", "drop": ["ghost"]}, "'ghost' \\(data.drop\\)"),
        ({"target": "tier", "task": "binary"}, "exactly 2 classes"),
        ({"target": "city", "task": "regression"}, "numeric target"),
        ({"target": "bought", "task": "ranking"}, "data.task must be one of"),
        ({"target": "bought", "positive_class": "maybe"}, "positive_class"),
    ],
)
def test_user_errors_name_the_problem(people, kwargs, message):
    with pytest.raises(UserError, match=message):
        load_csv(0, path=people, **kwargs)


def test_missing_file_and_ragged_rows(tmp_path):
    with pytest.raises(UserError, match=r"CSV file not found: .*absent\.csv"):
        load_csv(0, path=str(tmp_path / "absent.csv"), target="y")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(UserError, match="data row 2 has 1 cells"):
        load_csv(0, path=str(ragged), target="b")


def test_too_rare_class_is_a_user_error(tmp_path):
    rows = [[i, "common"] for i in range(30)] + [[99, "rare"]]
    path = write_csv(tmp_path / "rare.csv", ["x", "y"], rows)
    with pytest.raises(UserError, match="Cannot split"):
        load_csv(0, path=path, target="y")


# ---- series ---------------------------------------------------------------------------


def test_csv_series_is_split_in_time(tmp_path):
    """The target is the row's time index, so values reveal where each window came from."""
    n = 400
    path = write_csv(tmp_path / "s.csv", ["t", "noise"], [[i, np.sin(i)] for i in range(n)])
    bundle = load_csv_series(0, path=path, column="t", features=["noise"], window=10, horizon=3)
    assert bundle.spec.input_shape == (10, 2) and bundle.spec.n_outputs == 3
    assert bundle.spec.task is Task.FORECAST and bundle.meta["target_channel"] == 0
    scaler = bundle.meta["target_scaler"]
    assert len(scaler["mean"]) == 3

    def times(split, what):
        values = getattr(split, what)
        values = values[..., 0] if what == "x" else values
        return torch.round(values * scaler["std"][0] + scaler["mean"][0])

    spans = {
        name: (times(getattr(bundle, name), "x").min(), times(getattr(bundle, name), "y").max())
        for name in ("train", "val", "test")
    }
    assert spans["train"][1] < spans["val"][0] and spans["val"][1] < spans["test"][0]
    assert spans["test"][1] == n - 1
    first = bundle.train
    assert torch.equal(times(first, "y")[:, 0], times(first, "x")[:, -1] + 1)
    assert abs(float(bundle.train.x[..., 0].mean())) < 0.05  # train-only scaling


def test_csv_series_sorts_by_date_and_fills_gaps_forward(tmp_path):
    days = [f"2024-01-{d:02d}" for d in range(1, 31)] + [f"2024-02-{d:02d}" for d in range(1, 29)]
    values = [str(float(i)) for i in range(len(days))]
    values[0] = ""  # a leading gap: the row is dropped
    values[20] = "NA"  # an inner gap: filled with the previous value
    rows = list(zip(days, values, strict=True))[::-1]  # file in reverse time order
    path = write_csv(tmp_path / "d.csv", ["day", "value"], rows)
    bundle = load_csv_series(0, path=path, column="value", date_column="day", window=5)
    assert bundle.meta["filled_values"] == 1
    assert bundle.meta["split_times"]["train"][0].startswith("2024-01-02")
    assert bundle.meta["split_times"]["test"][1].startswith("2024-02-28")
    scaler = bundle.meta["target_scaler"]
    first = bundle.train.x[0, :, 0] * scaler["std"][0] + scaler["mean"][0]
    assert torch.allclose(first, torch.tensor([1.0, 2, 3, 4, 5]), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"column": "nope"}, "Column 'nope' \\(data.column\\) is not in"),
        ({"column": None}, "data.column"),
        ({"column": "value", "date_column": "label"}, "ISO 8601"),
        ({"column": "label"}, "must hold numbers, but data row 1 has 'x'"),
    ],
)
def test_csv_series_user_errors(tmp_path, kwargs, message):
    path = write_csv(tmp_path / "e.csv", ["value", "label"], [[i, "x"] for i in range(200)])
    with pytest.raises(UserError, match=message):
        load_csv_series(0, path=path, **kwargs)


# ---- delimiters, numeric column names, infinite cells ---------------------------------


def _lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _rows(sep: str, n: int = 60) -> list[str]:
    return [sep.join(["2010", "width", "colour"])] + [
        sep.join([str(i % 2), f"{i / 10:.1f}", "red" if i % 3 else "blue"]) for i in range(n)
    ]


@pytest.mark.parametrize("sep", [";", "\t", "|", ","])
def test_delimiter_is_detected(tmp_path, sep):
    path = _lines(tmp_path / "d.csv", _rows(sep))
    table = read_csv(path)
    assert table.header == ("2010", "width", "colour")
    bundle = load_csv(0, path=path, target="2010")
    assert bundle.meta["feature_names"] == ["width", "colour_blue", "colour_red"]


def test_semicolon_files_with_decimal_commas_read_as_numbers(tmp_path):
    lines = ["y;length;label"] + [f"{i % 2};{i},{i % 10};a,b" for i in range(60)]
    table = read_csv(_lines(tmp_path / "eu.csv", lines))
    assert table.numeric("length", "features")[:3].tolist() == [0.0, 1.1, 2.2]
    assert table.columns["label"][0] == "a,b"  # text keeps its commas


def test_delimiter_names_and_a_forced_delimiter(tmp_path):
    path = _lines(tmp_path / "t.tsv", _rows("\t"))
    assert (
        read_csv(path, "tab").header == read_csv(path, "\\t").header == ("2010", "width", "colour")
    )
    semicolons = _lines(tmp_path / "s.csv", ["a;b", "1;2,5"])
    assert read_csv(semicolons).columns == {"a": ["1"], "b": ["2.5"]}
    with pytest.raises(UserError, match=r"data row 1 has 2 cells .*data\.delimiter=','"):
        read_csv(semicolons, ",")
    assert read_csv(_lines(tmp_path / "one.csv", ["value", "1", "2"])).header == ("value",)


def test_numeric_looking_column_name_works_unquoted(tmp_path):
    """``data.target=2010`` reaches the loader as the int 2010."""
    path = _lines(tmp_path / "years.csv", _rows(","))
    bundle = load_csv(0, path=path, target=2010, drop=[])
    assert bundle.spec.task is Task.BINARY and bundle.meta["target"] == "2010"
    assert "2010" not in bundle.meta["feature_names"]  # not also used as a feature
    by_int = load_csv(0, path=path, target="width", drop=[2010])
    assert by_int.meta["feature_names"] == ["colour_blue", "colour_red"]


def test_numeric_target_override_through_hydra(tmp_path):
    from tests.conftest import compose_cfg

    path = _lines(tmp_path / "years.csv", _rows(","))
    cfg = compose_cfg("data=csv", f"data.path={path}", "data.target=2010")
    assert cfg.data["target"] == 2010  # what Hydra hands over
    kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
    assert load_csv(0, **kwargs).meta["target"] == "2010"


@pytest.mark.parametrize(
    ("column", "cell", "message"),
    [
        (
            "width",
            "inf",
            r"Column 'width' of .* has an infinite value 'inf' in data row 5 \(line 6\)",
        ),
        ("width", "-1e999", r"Column 'width' .* infinite value '-1e999' in data row 5"),
        ("2010", "Infinity", r"Column '2010' .* infinite value 'Infinity' in data row 5"),
    ],
)
def test_an_infinite_cell_names_its_column_and_row(tmp_path, column, cell, message):
    lines = _rows(",")
    header = lines[0].split(",")
    cells = lines[5].split(",")
    cells[header.index(column)] = cell
    lines[5] = ",".join(cells)
    path = _lines(tmp_path / "inf.csv", lines)
    task = "regression" if column == "2010" else "auto"
    with pytest.raises(UserError, match=message):
        load_csv(0, path=path, target="2010" if column != "2010" else "width", task=task)
    with pytest.raises(UserError, match=message):
        read_csv(path).numeric(column, "column")


def test_a_file_that_is_not_utf8_is_one_message(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_csv(str(path))
