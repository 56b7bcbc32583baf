"""Every reported metric equals scikit-learn's on fixed random predictions (to 1e-6).

Where the definitions differ the test states the reference used: ROC AUC and average
precision average only the classes where they are defined (sklearn raises or warns),
per-class 0/0 values are NaN (sklearn's ``zero_division=np.nan``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.preprocessing import label_binarize

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.evaluation.baseline import baseline
from dlrun.evaluation.files import clean
from dlrun.evaluation.metrics import curves, task_metrics
from dlrun.evaluation.predict import Predictions, Scored, score

TOL = 1e-6


@pytest.fixture(autouse=True)
def _quiet_sklearn():
    """sklearn warns on 0/0 by design; the tests pass zero_division explicitly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


def scored(
    task: Task, outputs: torch.Tensor, targets: torch.Tensor, scaler: dict | None = None
) -> Scored:
    """Model-like raw outputs -> Scored, with the task loss computed like predict() does."""
    from dlrun.tasks import loss_fn

    outputs = outputs.to(torch.float64)
    if task is Task.MULTICLASS:
        loss = float(loss_fn(task)(outputs, targets))
    else:
        loss = float(loss_fn(task)(outputs, targets.to(torch.float64)))
    return score(task, Predictions(targets, loss, outputs=outputs), 0.5, scaler)


def names(k: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(k))


def specificity_reference(
    y: np.ndarray, pred: np.ndarray, labels, zero_division: float = np.nan
) -> np.ndarray:
    """TN / (TN + FP) per class from sklearn's one-vs-rest confusion matrices."""
    mcm = skm.multilabel_confusion_matrix(y, pred, labels=labels)
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tn + fp > 0, tn / (tn + fp), zero_division)


def specificity_macro_reference(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro specificity with sklearn's default label set and zero_division=0."""
    present = np.unique(np.concatenate([y, pred]))
    return float(np.mean(specificity_reference(y, pred, present, zero_division=0.0)))


def assert_close(actual: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, abs=TOL)


def multiclass_case(n: int, k: int, seed: int, absent: int | None, predicted: bool):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    if absent is not None:
        y[y == absent] = (absent + 1) % k
        if not predicted:
            logits[:, absent] -= 20
    return y, logits


def check_multiclass(m: dict, y: np.ndarray, p: np.ndarray, k: int) -> None:
    """All multiclass keys against sklearn (see the module docstring for AUC/AP)."""
    pred = p.argmax(1)
    labels = list(range(k))
    assert_close(m["accuracy"], skm.accuracy_score(y, pred))
    for key, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert_close(m[f"{key}_macro"], fn(y, pred, average="macro", zero_division=0))
    assert_close(m["f1_micro"], skm.f1_score(y, pred, average="micro"))
    assert_close(m["f1_weighted"], skm.f1_score(y, pred, average="weighted", zero_division=0))
    assert_close(m["specificity_macro"], specificity_macro_reference(y, pred))
    assert_close(m["loss"], skm.log_loss(y, p, labels=labels))
    if k > 5:
        assert_close(m["top5_accuracy"], skm.top_k_accuracy_score(y, p, k=5, labels=labels))
    onehot = label_binarize(y, classes=labels)
    counts = onehot.sum(0)
    auc = [skm.roc_auc_score(onehot[:, c], p[:, c]) for c in labels if 0 < counts[c] < len(y)]
    ap = [skm.average_precision_score(onehot[:, c], p[:, c]) for c in labels if counts[c]]
    assert_close(m["roc_auc"], float(np.mean(auc)) if auc else math.nan)
    assert_close(m["pr_auc"], float(np.mean(ap)) if ap else math.nan)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=np.nan
    )
    spec = specificity_reference(y, pred, labels)
    for c, name in enumerate(names(k)):
        row = m["per_class"][name]
        assert_close(row["precision"], precision[c])
        assert_close(row["recall"], recall[c])
        assert_close(row["f1"], f1[c])
        assert_close(row["specificity"], spec[c])
        assert row["support"] == support[c]
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()


@pytest.mark.parametrize("predicted", [True, False], ids=["absent-but-predicted", "never-seen"])
def test_multiclass_with_a_class_absent_from_the_split(predicted: bool) -> None:
    y, logits = multiclass_case(120, 7, seed=1, absent=3, predicted=predicted)
    s = scored(Task.MULTICLASS, logits, y)
    m = task_metrics(Task.MULTICLASS, s, names(7), 0.5)
    check_multiclass(m, y.numpy(), s.scores.numpy(), 7)
    assert math.isnan(m["roc_auc_per_class"]["c3"])
    assert any("'c3'" in note for note in m["notes"])


def test_multiclass_all_present_matches_sklearn_ovr_directly() -> None:
    y, logits = multiclass_case(200, 4, seed=2, absent=None, predicted=True)
    s = scored(Task.MULTICLASS, logits, y)
    m = task_metrics(Task.MULTICLASS, s, names(4), 0.5)
    p = s.scores.numpy()
    check_multiclass(m, y.numpy(), p, 4)
    assert "top5_accuracy" not in m  # fewer than 6 classes
    assert_close(m["roc_auc"], skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    onehot = label_binarize(y, classes=range(4))
    assert_close(m["pr_auc"], skm.average_precision_score(onehot, p, average="macro"))
    assert m["notes"] == []


def test_multiclass_most_confused_pairs() -> None:
    y, logits = multiclass_case(150, 5, seed=3, absent=None, predicted=True)
    m = task_metrics(Task.MULTICLASS, scored(Task.MULTICLASS, logits, y), names(5), 0.5)
    matrix = np.array(m["confusion_matrix"])
    off = matrix - np.diag(np.diag(matrix))
    top = m["most_confused"][0]
    assert top["count"] == off.max()
    assert off[names(5).index(top["true"]), names(5).index(top["predicted"])] == off.max()
    counts = [pair["count"] for pair in m["most_confused"]]
    assert counts == sorted(counts, reverse=True)


def check_binary(m: dict, y: np.ndarray, prob: np.ndarray, threshold: float) -> None:
    pred = (prob > threshold).astype(int)
    assert_close(m["accuracy"], skm.accuracy_score(y, pred))
    for key, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert_close(m[key], fn(y, pred, zero_division=0))  # positive class
        assert_close(m[f"{key}_macro"], fn(y, pred, average="macro", zero_division=0))
    assert_close(m["f1_micro"], skm.f1_score(y, pred, average="micro"))
    assert_close(m["f1_weighted"], skm.f1_score(y, pred, average="weighted", zero_division=0))
    assert_close(m["specificity_macro"], specificity_macro_reference(y, pred))
    assert_close(m["loss"], skm.log_loss(y, prob, labels=[0, 1]))
    both = 0 < y.sum() < len(y)
    assert_close(m["roc_auc"], skm.roc_auc_score(y, prob) if both else math.nan)
    assert_close(m["pr_auc"], skm.average_precision_score(y, prob) if y.sum() else math.nan)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    op = m["operating_point"]
    assert op["counts"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert sum(op["per_1000"].values()) == pytest.approx(1000, abs=0.3)
    assert m["threshold"] == threshold


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_matches_sklearn(threshold: float) -> None:
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(150, generator=g) < 0.35).float()
    logits = torch.randn(150, 1, generator=g) + y.unsqueeze(1)
    loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y))
    s = score(Task.BINARY, Predictions(y, loss, outputs=logits.double()), threshold, None)
    m = task_metrics(Task.BINARY, s, ("benign", "malignant"), threshold)
    check_binary(m, y.long().numpy(), s.scores.numpy(), threshold)


def test_multilabel_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(5)
    y = (torch.rand(100, 4, generator=g) < 0.4).float()
    logits = torch.randn(100, 4, generator=g) + y
    s = scored(Task.MULTILABEL, logits, y)
    m = task_metrics(Task.MULTILABEL, s, names(4), 0.5)
    Y, P = y.long().numpy(), s.scores.numpy()
    pred = (P > 0.5).astype(int)
    assert_close(m["f1_micro"], skm.f1_score(Y, pred, average="micro", zero_division=0))
    assert_close(m["f1_macro"], skm.f1_score(Y, pred, average="macro", zero_division=0))
    assert_close(m["precision_macro"], skm.precision_score(Y, pred, average="macro"))
    assert_close(m["recall_macro"], skm.recall_score(Y, pred, average="macro"))
    assert_close(m["hamming_loss"], skm.hamming_loss(Y, pred))
    assert_close(m["subset_accuracy"], skm.accuracy_score(Y, pred))
    assert_close(m["roc_auc"], skm.roc_auc_score(Y, P, average="macro"))
    assert_close(m["pr_auc"], skm.average_precision_score(Y, P, average="macro"))
    per_label_bce = [skm.log_loss(Y[:, j], P[:, j], labels=[0, 1]) for j in range(4)]
    assert_close(m["loss"], float(np.mean(per_label_bce)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        Y, pred, zero_division=np.nan
    )
    for j, name in enumerate(names(4)):
        row = m["per_class"][name]
        assert_close(row["precision"], precision[j])
        assert_close(row["recall"], recall[j])
        assert_close(row["f1"], f1[j])
        assert row["support"] == support[j]


def test_multilabel_label_without_positives_is_left_out_of_auc() -> None:
    g = torch.Generator().manual_seed(6)
    y = (torch.rand(80, 3, generator=g) < 0.5).float()
    y[:, 1] = 0
    s = scored(Task.MULTILABEL, torch.randn(80, 3, generator=g), y)
    m = task_metrics(Task.MULTILABEL, s, names(3), 0.5)
    Y, P = y.long().numpy(), s.scores.numpy()
    expected = np.mean([skm.roc_auc_score(Y[:, j], P[:, j]) for j in (0, 2)])
    assert_close(m["roc_auc"], float(expected))
    assert math.isnan(m["pr_auc_per_class"]["c1"])
    assert any("'c1'" in note for note in m["notes"])


def test_regression_in_original_units_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(7)
    y_std = torch.randn(60, 1, generator=g)
    out = y_std + 0.3 * torch.randn(60, 1, generator=g)
    scaler = {"mean": [150.0], "std": [75.0]}
    m = task_metrics(Task.REGRESSION, scored(Task.REGRESSION, out, y_std, scaler), (), 0.5)
    y = y_std.double().numpy() * 75 + 150
    p = out.double().numpy() * 75 + 150
    assert_close(m["rmse"], skm.root_mean_squared_error(y, p))
    assert_close(m["mse"], skm.mean_squared_error(y, p))
    assert_close(m["mae"], skm.mean_absolute_error(y, p))
    assert_close(m["r2"], skm.r2_score(y, p))
    assert_close(m["mape"], skm.mean_absolute_percentage_error(y, p))
    # loss stays in training units: the MSE on standardised targets
    assert_close(m["loss"], skm.mean_squared_error(y_std.numpy(), out.numpy()))


def test_regression_several_outputs() -> None:
    g = torch.Generator().manual_seed(8)
    y_std = torch.randn(50, 3, generator=g)
    out = y_std + 0.5 * torch.randn(50, 3, generator=g)
    scaler = {"mean": [1.0, -2.0, 10.0], "std": [2.0, 0.5, 3.0]}
    m = task_metrics(Task.REGRESSION, scored(Task.REGRESSION, out, y_std, scaler), (), 0.5)
    mean, std = np.array(scaler["mean"]), np.array(scaler["std"])
    y, p = y_std.double().numpy() * std + mean, out.double().numpy() * std + mean
    assert_close(m["mse"], skm.mean_squared_error(y, p))
    assert_close(m["rmse"], math.sqrt(skm.mean_squared_error(y, p)))  # over all outputs
    assert_close(m["mae"], skm.mean_absolute_error(y, p))
    assert_close(m["r2"], skm.r2_score(y, p))


def test_perfect_predictions() -> None:
    y = torch.arange(40) % 4
    logits = 30.0 * torch.nn.functional.one_hot(y, 4).double()
    m = task_metrics(Task.MULTICLASS, scored(Task.MULTICLASS, logits, y), names(4), 0.5)
    for key in ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"):
        assert_close(m[key], 1.0)
    assert_close(m["roc_auc"], 1.0)
    assert_close(m["pr_auc"], 1.0)
    assert m["most_confused"] == []
    check_multiclass(m, y.numpy(), torch.softmax(logits, 1).numpy(), 4)
    yb = (torch.arange(30) % 3 == 0).float()
    mb = task_metrics(
        Task.BINARY, scored(Task.BINARY, (yb * 40 - 20).unsqueeze(1), yb), ("no", "yes"), 0.5
    )
    check_binary(mb, yb.long().numpy(), torch.sigmoid(yb * 40 - 20).double().numpy(), 0.5)
    assert_close(mb["f1"], 1.0)
    yr = torch.randn(20, 1, generator=torch.Generator().manual_seed(9))
    mr = task_metrics(Task.REGRESSION, scored(Task.REGRESSION, yr.clone(), yr), (), 0.5)
    assert_close(mr["rmse"], 0.0)
    assert_close(mr["r2"], 1.0)


def test_single_class_split_reports_undefined_auc_as_null() -> None:
    g = torch.Generator().manual_seed(10)
    y = torch.zeros(30, dtype=torch.long)
    s = scored(Task.MULTICLASS, torch.randn(30, 3, generator=g), y)
    m = task_metrics(Task.MULTICLASS, s, names(3), 0.5)
    check_multiclass(m, y.numpy(), s.scores.numpy(), 3)
    assert math.isnan(m["roc_auc"])
    assert_close(m["pr_auc"], 1.0)  # AP of the only class: every sample is a positive
    assert clean(m)["roc_auc"] is None
    yb = torch.zeros(25)
    sb = scored(Task.BINARY, torch.randn(25, 1, generator=g), yb)
    mb = task_metrics(Task.BINARY, sb, ("neg", "pos"), 0.5)
    check_binary(mb, yb.long().numpy(), sb.scores.numpy(), 0.5)
    assert math.isnan(mb["roc_auc"]) and math.isnan(mb["pr_auc"])
    assert len(mb["notes"]) == 2


def test_language_model_loss_perplexity_bits() -> None:
    from torchmetrics.text import Perplexity

    g = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 9, 13, generator=g)
    y = torch.randint(0, 13, (6, 9), generator=g)
    loss = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 13), y.reshape(-1)))
    logp = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    p = Predictions(y, loss, token_logprob=logp, token_pred=logits.argmax(-1))
    m = task_metrics(Task.LANGUAGE_MODEL, score(Task.LANGUAGE_MODEL, p, 0.5, None), (), 0.5)
    assert_close(m["loss"], -float(logp.double().mean()))
    assert m["perplexity"] == pytest.approx(float(Perplexity()(logits, y)), rel=1e-5)
    assert_close(m["bits_per_token"], loss / math.log(2))
    assert_close(m["accuracy"], float((logits.argmax(-1) == y).double().mean()))


def tabular_bundle(task: Task, train_y: torch.Tensor, test_y: torch.Tensor, k: int, **meta):
    spec = DataSpec("toy", task, DataKind.TABULAR, (2,), k)
    train = Split(torch.zeros(len(train_y), 2), train_y)
    test = Split(torch.zeros(len(test_y), 2), test_y)
    return DataBundle(spec, train, test, test, meta)


def test_majority_baseline_uses_train_split_and_is_seeded() -> None:
    train_y = torch.tensor([2] * 50 + [0] * 30 + [1] * 20)
    test_y = torch.tensor([0, 1, 2, 1, 0, 1, 1, 0] * 5)
    bundle = tabular_bundle(Task.MULTICLASS, train_y, test_y, 3)
    base = baseline(Task.MULTICLASS, bundle, bundle.test, 40, 0.5, None)
    assert (base.preds == 2).all()
    prior = (torch.tensor([30.0, 20.0, 50.0]) + 1) / 103
    assert_close(base.loss, skm.log_loss(test_y, prior.expand(40, 3).numpy(), labels=[0, 1, 2]))
    again = baseline(Task.MULTICLASS, bundle, bundle.test, 40, 0.5, None)
    assert torch.equal(base.rank_scores, again.rank_scores)
    assert (base.rank_scores.sum(1) == 1).all()  # one-hot stratified draws
    m = task_metrics(Task.MULTICLASS, base, names(3), 0.5)
    assert_close(m["accuracy"], float((test_y == 2).double().mean()))


def test_binary_and_multilabel_baselines() -> None:
    train_y = torch.tensor([1.0] * 20 + [0.0] * 80)
    bundle = tabular_bundle(Task.BINARY, train_y, torch.tensor([0.0, 1.0] * 10), 1)
    base = baseline(Task.BINARY, bundle, bundle.test, 20, 0.5, None)
    assert (base.preds == 0).all()
    assert base.rank_scores.shape == (20,)
    ml_train = torch.tensor([[1.0, 0.0]] * 30 + [[1.0, 1.0]] * 10)
    bundle = tabular_bundle(Task.MULTILABEL, ml_train, ml_train[:12], 2)
    base = baseline(Task.MULTILABEL, bundle, bundle.test, 12, 0.5, None)
    assert base.preds.tolist() == [[1, 0]] * 12


def test_regression_baseline_is_training_mean_in_original_units() -> None:
    train_y = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    bundle = tabular_bundle(Task.REGRESSION, train_y, torch.tensor([[0.0], [1.0]]), 1)
    scaler = {"mean": [10.0], "std": [2.0]}
    base = baseline(Task.REGRESSION, bundle, bundle.test, 2, 0.5, scaler)
    assert base.preds.reshape(-1).tolist() == [10.0 + 2.0 * 3.0] * 2
    assert_close(base.loss, ((3.0 - 0.0) ** 2 + (3.0 - 1.0) ** 2) / 2)


def test_forecast_baseline_is_persistence_of_target_channel() -> None:
    g = torch.Generator().manual_seed(12)
    x = torch.randn(10, 5, 3, generator=g)
    y = torch.randn(10, 4, generator=g)
    spec = DataSpec("series", Task.FORECAST, DataKind.SEQUENCE, (5, 3), 4)
    split = Split(x, y)
    bundle = DataBundle(spec, split, split, split, {"target_channel": 2})
    base = baseline(Task.FORECAST, bundle, split, 10, 0.5, None)
    assert torch.equal(base.preds, x[:, -1, 2:3].double().expand(10, 4))
    m = task_metrics(Task.FORECAST, base, (), 0.5)
    # rmse over every forecast step (sklearn would average per-step RMSEs instead)
    assert_close(m["rmse"], math.sqrt(skm.mean_squared_error(y.numpy(), base.preds.numpy())))
    assert_close(m["mae"], skm.mean_absolute_error(y.numpy(), base.preds.numpy()))


@pytest.mark.parametrize("given", [False, True])
def test_unigram_baseline(given: bool) -> None:
    train_y = torch.tensor([[0, 0, 0, 1], [0, 2, 0, 0]])
    test_y = torch.tensor([[0, 1, 3, 0]])
    spec = DataSpec("text", Task.LANGUAGE_MODEL, DataKind.TOKENS, (4,), 4, vocab_size=4)
    meta = {"unigram": [6, 1, 1, 0]} if given else {}
    bundle = DataBundle(
        spec, Split(train_y, train_y), Split(test_y, test_y), Split(test_y, test_y), meta
    )
    base = baseline(Task.LANGUAGE_MODEL, bundle, bundle.test, 1, 0.5, None)
    probs = np.array([6, 1, 1, 0.0]) if given else np.array([7, 2, 2, 1.0])  # add-one counts
    probs = np.maximum(probs, 1e-12) / np.maximum(probs, 1e-12).sum()
    assert_close(base.loss, float(-np.log(probs[[0, 1, 3, 0]]).mean()))
    assert (base.preds == 0).all()


def test_curves_cover_defined_classes_plus_macro() -> None:
    y, logits = multiclass_case(90, 5, seed=13, absent=2, predicted=True)
    s = scored(Task.MULTICLASS, logits, y)
    m = task_metrics(Task.MULTICLASS, s, names(5), 0.5)
    roc, pr = curves(Task.MULTICLASS, s, names(5), m)
    assert [c.label for c in roc] == ["c0", "c1", "c3", "c4", "macro"]
    for curve in roc[:-1]:  # each drawn curve encloses its reported area
        assert_close(float(np.trapezoid(curve.y, curve.x)), m["roc_auc_per_class"][curve.label])
    for curve in pr[:-1]:  # AP = sum over recall steps of precision (sklearn's definition)
        steps = -np.diff(curve.x) if curve.x[0] > curve.x[-1] else np.diff(curve.x)
        precision = curve.y[:-1] if curve.x[0] > curve.x[-1] else curve.y[1:]
        assert_close(float(np.sum(steps * precision)), m["pr_auc_per_class"][curve.label])
    assert roc[-1].area == pytest.approx(np.mean([c.area for c in roc[:-1]]))
    assert np.all(np.diff(roc[-1].x) >= 0) and roc[-1].y[-1] == pytest.approx(1.0)


def test_clean_makes_strict_json() -> None:
    data = {"a": math.nan, "b": [math.inf, 1.5, torch.tensor(2.0)], "c": np.float64(3.0)}
    assert clean(data) == {"a": None, "b": [None, 1.5, 2.0], "c": 3.0}


def test_binary_curves_are_the_positive_class_where_defined() -> None:
    g = torch.Generator().manual_seed(14)
    y = (torch.rand(60, generator=g) < 0.4).float()
    s = scored(Task.BINARY, torch.randn(60, 1, generator=g) + y.unsqueeze(1), y)
    m = task_metrics(Task.BINARY, s, ("benign", "malignant"), 0.5)
    roc, pr = curves(Task.BINARY, s, ("benign", "malignant"), m)
    assert [(c.label, c.area) for c in roc] == [("malignant", m["roc_auc"])]
    assert [(c.label, c.area) for c in pr] == [("malignant", m["pr_auc"])]
    fpr, tpr, _ = skm.roc_curve(y.numpy(), s.scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(roc[0].x, fpr)  # x = false positive rate, y = true
    np.testing.assert_allclose(roc[0].y, tpr)
    precision, recall, _ = skm.precision_recall_curve(y.numpy(), s.scores.numpy())
    np.testing.assert_allclose(pr[0].x, recall)  # x = recall, y = precision
    np.testing.assert_allclose(pr[0].y, precision)
    assert roc[0].x.dtype == np.float64
    negatives = torch.zeros(20)
    s0 = scored(Task.BINARY, torch.randn(20, 1, generator=g), negatives)
    m0 = task_metrics(Task.BINARY, s0, ("no", "yes"), 0.5)
    assert curves(Task.BINARY, s0, ("no", "yes"), m0) == ([], [])  # nothing to rank
    positives = torch.ones(20)
    s1 = scored(Task.BINARY, torch.randn(20, 1, generator=g), positives)
    roc1, pr1 = curves(
        Task.BINARY, s1, ("no", "yes"), task_metrics(Task.BINARY, s1, ("no", "yes"), 0.5)
    )
    assert roc1 == [] and [c.label for c in pr1] == ["yes"]  # PR needs only positives


def test_interpolated_precision_is_the_best_precision_at_or_beyond_each_recall() -> None:
    from dlrun.evaluation.metrics import _interpolated_precision

    recall = np.array([1.0, 0.75, 0.5, 0.5, 0.25, 0.0])  # torchmetrics' order: falling
    precision = np.array([0.4, 0.5, 0.9, 0.6, 0.8, 1.0])
    grid = np.array([0.0, 0.25, 0.3, 0.5, 0.6, 0.75, 1.0])
    got = _interpolated_precision(recall, precision, grid)
    assert got.dtype == np.float64
    assert got.tolist() == [1.0, 0.9, 0.9, 0.9, 0.5, 0.5, 0.4]


def test_the_macro_pr_curve_averages_interpolated_precision_on_a_recall_grid() -> None:
    y, logits = multiclass_case(90, 5, seed=13, absent=2, predicted=True)
    s = scored(Task.MULTICLASS, logits, y)
    m = task_metrics(Task.MULTICLASS, s, names(5), 0.5)
    _, pr = curves(Task.MULTICLASS, s, names(5), m)
    *classes, macro = pr
    assert [c.area for c in classes] == [m["pr_auc_per_class"][c.label] for c in classes]
    assert (macro.label, macro.area) == ("macro", m["pr_auc"])
    np.testing.assert_array_equal(macro.x, np.linspace(0.0, 1.0, 201))
    best = [[c.y[c.x >= r].max() for r in macro.x] for c in classes]
    np.testing.assert_allclose(macro.y, np.mean(best, axis=0))


def test_multilabel_curves_are_per_label() -> None:
    g = torch.Generator().manual_seed(15)
    y = (torch.rand(50, 3, generator=g) < 0.5).float()
    s = scored(Task.MULTILABEL, torch.randn(50, 3, generator=g) + y, y)
    m = task_metrics(Task.MULTILABEL, s, names(3), 0.5)
    roc, _ = curves(Task.MULTILABEL, s, names(3), m)
    fpr, tpr, _ = skm.roc_curve(y[:, 1].numpy(), s.scores[:, 1].numpy(), drop_intermediate=False)
    assert [c.label for c in roc] == ["c0", "c1", "c2", "macro"]
    np.testing.assert_allclose(roc[1].x, fpr)
    np.testing.assert_allclose(roc[1].y, tpr)


def test_most_confused_shares_and_ties() -> None:
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([1, 2, 0, 0, 0, 2, 0, 1, 2])  # every off-diagonal cell is 1
    logits = torch.nn.functional.one_hot(pred, 3).double() * 5
    m = task_metrics(Task.MULTICLASS, scored(Task.MULTICLASS, logits, y), names(3), 0.5)
    pairs = [
        (p["true"], p["predicted"], p["count"], p["share_of_true"]) for p in m["most_confused"]
    ]
    assert pairs == [  # ties in reading order, at most MOST_CONFUSED (5)
        ("c0", "c1", 1, 1 / 4), ("c0", "c2", 1, 1 / 4), ("c1", "c0", 1, 1 / 2),
        ("c1", "c2", 1, 1 / 2), ("c2", "c0", 1, 1 / 3),
    ]  # fmt: skip


def test_operating_point_per_1000_is_rounded_to_one_decimal() -> None:
    y = torch.tensor([1.0, 0.0, 0.0])
    s = scored(Task.BINARY, torch.tensor([[3.0], [3.0], [-3.0]]), y)
    op = task_metrics(Task.BINARY, s, ("no", "yes"), 0.5)["operating_point"]
    assert op["per_1000"] == {"tp": 333.3, "fp": 333.3, "tn": 333.3, "fn": 0.0}


def test_per_class_values_are_defined_from_a_single_case() -> None:
    """One prediction or one sample of a class is enough; only 0/0 is NaN."""
    y = torch.tensor([0, 0, 1])
    pred = torch.tensor([0, 1, 0])  # class 2: never in the split, never predicted
    logits = torch.nn.functional.one_hot(pred, 3).double() * 5
    m = task_metrics(Task.MULTICLASS, scored(Task.MULTICLASS, logits, y), names(3), 0.5)
    c1, c2 = m["per_class"]["c1"], m["per_class"]["c2"]
    assert (c1["precision"], c1["recall"], c1["f1"]) == (0.0, 0.0, 0.0)  # 0/1, 0/1, 0/2
    assert c1["specificity"] == 0.5 and c2["specificity"] == 1.0
    y2 = torch.tensor([0, 1])
    logits2 = torch.nn.functional.one_hot(torch.tensor([1, 1]), 2).double() * 5
    m2 = task_metrics(Task.MULTICLASS, scored(Task.MULTICLASS, logits2, y2), names(2), 0.5)
    assert m2["per_class"]["c1"]["specificity"] == 0.0  # tn 0, fp 1: defined, 0
    assert math.isnan(m2["per_class"]["c0"]["precision"])  # never predicted
    assert m2["per_class"]["c0"]["f1"] == 0.0  # one sample, missed: 0 / 1


def test_torchmetrics_warnings_on_undefined_values_are_not_shown() -> None:
    """An absent class makes torchmetrics warn; the report's notes explain it instead."""
    g = torch.Generator().manual_seed(10)
    y = torch.zeros(30, dtype=torch.long)
    s = scored(Task.MULTICLASS, torch.randn(30, 3, generator=g), y)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        m = task_metrics(Task.MULTICLASS, s, names(3), 0.5)
        curves(Task.MULTICLASS, s, names(3), m)
    assert shown == [] and m["notes"]
