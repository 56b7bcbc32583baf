"""data/table.py: a table's preprocessing as JSON, the one encoder for training and new rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrun.data.table import encode_table, feature_names, fit_table
from dlrun.errors import UserError


def _fit(max_categories: int | None = None) -> tuple[dict, dict]:
    numeric = {"v": np.array([1.0, 2.0, 3.0, np.nan, 4.0, 5.0, 100.0])}
    categorical = {"c": ["a", "a", "a", "b", "b", "rare", "z"]}
    state = fit_table(numeric, categorical, np.arange(6), max_categories)
    return state, {**numeric, **categorical}


def test_state_is_plain_json_and_fit_on_training_rows_only():
    state, _ = _fit()
    assert json.loads(json.dumps(state)) == state
    (v,) = state["numeric"]
    assert v["median"] == 3.0  # of the training rows 1..5, not with the 100 of row 6
    assert v["mean"] == pytest.approx(3.0)
    assert state["categorical"][0]["categories"] == ["a", "b", "rare"]  # z is unseen


def test_encoding_matches_scikit_learn_with_rare_categories_grouped():
    from sklearn.preprocessing import OneHotEncoder

    cells = ["a"] * 5 + ["b"] * 4 + ["c", "d", "e"]
    state = fit_table({}, {"c": cells}, np.arange(12), max_categories=3)
    encoder = OneHotEncoder(handle_unknown="ignore", max_categories=3, sparse_output=False)
    raw = np.array([*cells, "new"], dtype=object)[:, None]
    expected = encoder.fit(raw[:12]).transform(raw)
    got = encode_table(state, {"c": [*cells, "new"]}).x
    assert np.array_equal(got, expected)
    assert feature_names(state) == encoder.get_feature_names_out(["c"]).tolist()


def test_new_rows_fall_back_as_documented_and_say_so():
    state, _ = _fit()
    encoded = encode_table(state, {"v": ["", "7"], "c": ["purple", "a"]})
    assert encoded.x[0, 0] == encode_table(state, {"v": [3.0], "c": ["a"]}).x[0, 0]  # median
    assert encoded.x[0, 1:].sum() == 0  # an unseen category: all zeros
    assert any("median" in n for n in encoded.notes)
    assert any("purple" in n for n in encoded.notes)


def test_a_word_in_a_numeric_column_is_one_clear_error():
    state, _ = _fit()
    with pytest.raises(UserError, match=r"column 'v' holds numbers.*row 2 has 'ten'"):
        encode_table(state, {"v": ["1", "ten"], "c": ["a", "a"]})
