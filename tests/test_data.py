"""Every data config instantiates and honours the DataSpec contract; splits are seeded
and leakage-free; series and text are split in time order."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dlrun.data.series import windows
from dlrun.data.spec import DataBundle, DataKind, Task
from dlrun.data.text import encode, load_text, load_text_classes
from dlrun.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"
# configs that load with no files and no optional packages
OFFLINE = [
    "digits",
    "digits_flat",
    "breast_cancer",
    "iris",
    "wine",
    "diabetes",
    "sine",
    "text",
    "text_classes",
    "multilabel",
    "waveforms",
]
HAS_STATSMODELS = importlib.util.find_spec("statsmodels") is not None


def load_config(name: str, data_dir: Path | str = "data", seed: int = 0, **overrides):
    """Compose ``configs/data/<name>.yaml`` as the CLI does and instantiate it.

    Hydra wraps a loader's exception in ``InstantiationException``; a UserError is
    re-raised as itself, as the CLI must do to show its one-line message.
    """
    cfg = OmegaConf.create({"paths": {"data_dir": str(data_dir)}})
    cfg.data = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.data.update(overrides)
    try:
        return instantiate(cfg.data, seed=seed)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def check_contract(bundle: DataBundle) -> None:
    """Shapes and dtypes per task and kind, as documented in ``dlrun.data.spec``."""
    spec = bundle.spec
    for split in (bundle.train, bundle.val, bundle.test):
        n = len(split)
        assert n > 0
        assert tuple(split.x.shape[1:]) == spec.input_shape
        if spec.kind is DataKind.TOKENS:
            assert split.x.dtype == torch.int64
            assert int(split.x.min()) >= 0 and int(split.x.max()) < spec.vocab_size
            assert len(spec.vocab) == spec.vocab_size
        else:
            assert split.x.dtype == torch.float32
            assert torch.isfinite(split.x).all()
        if split.lengths is not None:
            assert split.lengths.dtype == torch.int64 and split.lengths.shape == (n,)
            assert int(split.lengths.min()) >= 1 and int(split.lengths.max()) <= split.x.shape[1]
        y = split.y
        if spec.task is Task.MULTICLASS:
            assert y.dtype == torch.int64 and y.shape == (n,)
            assert int(y.min()) >= 0 and int(y.max()) < spec.n_outputs
            assert len(spec.class_names) == spec.n_outputs
        elif spec.task is Task.BINARY:
            assert y.dtype == torch.float32 and y.shape == (n,) and spec.n_outputs == 1
            assert set(y.unique().tolist()) <= {0.0, 1.0}
        elif spec.task is Task.MULTILABEL:
            assert y.dtype == torch.float32 and y.shape == (n, spec.n_outputs)
            assert set(y.unique().tolist()) <= {0.0, 1.0}
        elif spec.task in (Task.REGRESSION, Task.FORECAST):
            assert y.dtype == torch.float32 and y.shape == (n, spec.n_outputs)
            scaler = bundle.meta["target_scaler"]
            assert len(scaler["mean"]) == len(scaler["std"]) == spec.n_outputs
        else:
            assert spec.task is Task.LANGUAGE_MODEL
            assert y.dtype == torch.int64 and y.shape == split.x.shape
            assert torch.equal(split.x[:, 1:], y[:, :-1])  # y is x shifted by one
            assert spec.n_outputs == spec.vocab_size
    if spec.task is Task.FORECAST:
        assert spec.kind is DataKind.SEQUENCE
        assert 0 <= bundle.meta["target_channel"] < spec.input_shape[-1]
    if spec.task is Task.LANGUAGE_MODEL:
        unigram = bundle.meta["unigram"]
        assert len(unigram) == spec.vocab_size and abs(sum(unigram) - 1) < 1e-9
        assert min(unigram) > 0


def same_splits(a: DataBundle, b: DataBundle) -> bool:
    return all(
        torch.equal(p.x, q.x) and torch.equal(p.y, q.y)
        for p, q in ((a.train, b.train), (a.val, b.val), (a.test, b.test))
    )


@pytest.fixture(scope="module")
def offline_bundles() -> dict[str, DataBundle]:
    return {name: load_config(name) for name in OFFLINE}


def test_every_data_config_has_a_loader_and_no_seed_or_name():
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert set(OFFLINE) | {
        "mnist",
        "fashion_mnist",
        "cifar10",
        "sunspots",
        "csv",
        "csv_series",
        "image_folder",
        "text_folder",
        "array",
    } == set(names)
    for name in names:
        cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert cfg._target_.startswith("dlrun.data.")
        assert "seed" not in cfg and "name" not in cfg


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_configs_honour_the_contract(offline_bundles, name):
    check_contract(offline_bundles[name])


def test_expected_tasks_and_shapes(offline_bundles):
    expected = {
        "digits": (Task.MULTICLASS, DataKind.IMAGE, (1, 32, 32)),
        "digits_flat": (Task.MULTICLASS, DataKind.TABULAR, (64,)),
        "breast_cancer": (Task.BINARY, DataKind.TABULAR, (30,)),
        "iris": (Task.MULTICLASS, DataKind.TABULAR, (4,)),
        "wine": (Task.MULTICLASS, DataKind.TABULAR, (13,)),
        "diabetes": (Task.REGRESSION, DataKind.TABULAR, (10,)),
        "sine": (Task.FORECAST, DataKind.SEQUENCE, (50, 1)),
        "text": (Task.LANGUAGE_MODEL, DataKind.TOKENS, (64,)),
        "text_classes": (Task.MULTICLASS, DataKind.TOKENS, (64,)),
        "multilabel": (Task.MULTILABEL, DataKind.TABULAR, (20,)),
        "waveforms": (Task.MULTICLASS, DataKind.SEQUENCE, (100, 1)),
    }
    for name, (task, kind, shape) in expected.items():
        spec = offline_bundles[name].spec
        assert (spec.task, spec.kind, spec.input_shape) == (task, kind, shape), name


@pytest.mark.parametrize("name", ["iris", "multilabel", "waveforms", "sine", "text_classes"])
def test_same_seed_same_split(offline_bundles, name):
    assert same_splits(offline_bundles[name], load_config(name, seed=0))


@pytest.mark.parametrize("name", ["iris", "multilabel", "waveforms"])
def test_another_seed_another_random_split(offline_bundles, name):
    assert not same_splits(offline_bundles[name], load_config(name, seed=1))


@pytest.mark.parametrize("name", ["wine", "diabetes", "multilabel"])
def test_features_scaled_with_training_statistics_only(offline_bundles, name):
    bundle = offline_bundles[name]
    assert bundle.train.x.mean(0).abs().max() < 1e-4
    assert (bundle.train.x.std(0, unbiased=False) - 1).abs().max() < 1e-3
    # statistics fitted on all rows would centre val+test as well; train-only ones don't
    assert bundle.test.x.mean(0).abs().max() > 1e-3


def test_regression_target_standardised_on_train(offline_bundles):
    bundle = offline_bundles["diabetes"]
    assert abs(float(bundle.train.y.mean())) < 1e-5
    assert abs(float(bundle.test.y.mean())) > 1e-4
    scaler = bundle.meta["target_scaler"]
    original = bundle.train.y * scaler["std"][0] + scaler["mean"][0]
    assert float(original.min()) >= 25 and float(original.max()) <= 346  # diabetes range


def test_multilabel_has_several_labels_per_sample(offline_bundles):
    y = offline_bundles["multilabel"].train.y
    assert y.sum(1).min() >= 1 and y.sum(1).mean() > 1.5


def test_waveforms_padding_and_train_scaling(offline_bundles):
    train = offline_bundles["waveforms"].train
    steps = torch.arange(train.x.shape[1])
    real = steps[None, :] < train.lengths[:, None]
    assert (train.x[~real] == 0).all()
    assert abs(float(train.x[real].mean())) < 1e-4
    assert len(train.lengths.unique()) > 10  # genuinely variable lengths
    counts = torch.bincount(train.y)
    assert counts.min() > 0.2 * len(train)  # balanced: majority baseline ~25 %


def test_sine_is_split_in_time_without_straddling_windows(offline_bundles):
    bundle = offline_bundles["sine"]
    bounds = bundle.meta["split_bounds"]
    assert bounds["train"][1] == bounds["val"][0] and bounds["val"][1] == bounds["test"][0]
    window, horizon = bundle.meta["window"], bundle.meta["horizon"]
    for split in ("train", "val", "test"):
        start, stop = bounds[split]
        assert len(getattr(bundle, split)) == stop - start - window - horizon + 1
    assert abs(float(bundle.train.y.mean())) < 0.05


def test_windows_stay_inside_their_segment():
    values = np.arange(100, dtype=np.float64)[:, None]
    x, y, first = windows(values, 20, 60, window=5, horizon=3, stride=2)
    assert x.shape == (len(first), 5, 1) and y.shape == (len(first), 3)
    assert x.min() >= 20 and y.max() <= 59
    assert np.array_equal(x[:, -1, 0] + 1, y[:, 0])  # targets follow the window directly
    assert np.array_equal(np.diff(first), np.full(len(first) - 1, 2))


def test_forecast_segment_too_short_is_a_user_error():
    with pytest.raises(UserError, match="window"):
        load_config("sine", n_points=200, window=50)


def test_text_split_is_contiguous_and_in_order(tmp_path):
    corpus = tmp_path / "corpus.txt"
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(300))
    corpus.write_text(text, encoding="utf-8")
    bundle = load_text(0, path=str(corpus), block_size=16)
    check_contract(bundle)
    ids = torch.from_numpy(encode(text, bundle.spec.vocab))
    val_start = len(text) - 2 * round(len(text) * 0.1)
    for k in (0, len(bundle.val) - 1):
        block = ids[val_start + 16 * k : val_start + 16 * k + 16]
        assert torch.equal(bundle.val.x[k], block)
    # the last training target lies before the first val input
    last_train = 16 * (len(bundle.train) - 1) + 16
    assert last_train < val_start
    assert "".join(bundle.spec.vocab[i] for i in bundle.train.x[0].tolist()) == text[:16]


def test_text_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_text(0, path=str(tmp_path / "nope.txt"))


def test_text_classes_are_learnable_and_disjoint(offline_bundles):
    """Naive Bayes on character 1-3-grams beats the majority baseline by a wide margin."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB

    bundle = offline_bundles["text_classes"]

    def snippets(split):
        return ["".join(bundle.spec.vocab[i] for i in row) for row in split.x.tolist()]

    grams = CountVectorizer(analyzer="char", ngram_range=(1, 3)).fit(snippets(bundle.train))
    model = MultinomialNB().fit(grams.transform(snippets(bundle.train)), bundle.train.y)
    accuracy = model.score(grams.transform(snippets(bundle.test)), bundle.test.y)
    majority = float(torch.bincount(bundle.test.y).max()) / len(bundle.test)
    assert accuracy > majority + 0.15
    train_rows = {tuple(r) for r in bundle.train.x.tolist()}
    assert not any(tuple(r) in train_rows for r in bundle.test.x.tolist())


def test_text_classes_unknown_topic_is_a_user_error():
    with pytest.raises(UserError, match="no-such-topic"):
        load_text_classes(0, topics=["debugger", "no-such-topic"])


@pytest.mark.skipif(not HAS_STATSMODELS, reason="statsmodels (dlrun[series]) not installed")
def test_sunspots_config():
    bundle = load_config("sunspots")
    check_contract(bundle)
    assert bundle.meta["split_times"]["train"][0] == "1700"
    assert bundle.meta["split_times"]["test"][1] == "2008"


@pytest.mark.skipif(HAS_STATSMODELS, reason="statsmodels is installed")
def test_sunspots_without_statsmodels_says_what_to_install():
    with pytest.raises(UserError, match=r"pip install 'dlrun\[series\]'"):
        load_config("sunspots")


def test_csv_configs_instantiate_with_a_generated_file(tmp_path):
    path = tmp_path / "table.csv"
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["day", "temp", "city", "label"])
        for i in range(400):
            writer.writerow([i, f"{rng.normal(20, 5):.2f}", "abc"[i % 3], "yes" if i % 2 else "no"])
    tabular = load_config("csv", path=str(path), target="label", drop=["day"])
    check_contract(tabular)
    assert tabular.spec.task is Task.BINARY and tabular.spec.class_names == ("no", "yes")
    series = load_config("csv_series", path=str(path), column="temp", date_column="day")
    check_contract(series)
    assert series.spec.input_shape == (30, 1)


@pytest.mark.parametrize("name", ["csv", "csv_series"])
def test_csv_configs_without_path_say_what_to_set(name):
    with pytest.raises(UserError, match=r"data\.path"):
        load_config(name)
