"""Ensembles of trained runs, and bagging: several models, one evaluated answer.

An ensemble dir is a run dir of its own: ``ensemble.json`` (method and member dirs),
one member run dir per model inside it, ``contract.json``/``reference.pt`` (the
members' shared input contract) and the files an evaluation writes (metrics.json,
report.md, predictions.csv, plots). ``dlrun-predict``, ``dlrun-export`` and
``dlrun-serve`` take it like any run (:mod:`dlrun.predictor`).

Members must have been tested on the same test split (equal fingerprints in their
``contract.json``): a member trained with another seed could have trained on the
others' test examples, and the ensemble's score would be optimistic.

Bagging (``ensemble.bagging=N``) trains N members, each on a bootstrap resample of the
training split (drawn with replacement, seeded by the member's index) with its own
initialisation seed, all checked on the same validation split and scored on the same
test split, then evaluates their combination (``ensemble.method``). In one run they
train one after another into ``member_1/`` ... ``member_N/`` (a resumed run skips the
finished ones). To train them in parallel, sweep the member index with a launcher:
``dlrun -m ensemble.bagging=N 'ensemble.member=range(N)' hydra/launcher=joblib``; each
job trains one member and the sweep ends by building ``<sweep>/ensemble/``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import UserError
from dlrun.rundir import read_json_dict

if TYPE_CHECKING:
    from dlrun.config import RunConfig, RunContext

MEMBER_FILES = ("contract.json", "preprocess.json", "reference.pt", "metrics.json", "status.json")
HEADLINE = ("accuracy", "f1_macro", "roc_auc", "rmse", "mae", "loss")


def member_seed(seed: int, index: int) -> int:
    """Member ``index``'s seed for its resample, initialisation and batch order."""
    return seed + 1000 * (index + 1)


def bootstrap(bundle: Any, seed: int, index: int) -> Any:
    """``bundle`` with its training split resampled with replacement (same size)."""
    import torch

    from dlrun.data.spec import DataBundle

    n = len(bundle.train)
    generator = torch.Generator().manual_seed(member_seed(seed, index))
    rows = torch.randint(n, (n,), generator=generator)
    return DataBundle(bundle.spec, bundle.train.subset(rows), bundle.val, bundle.test,
                      bundle.meta)  # fmt: skip


def train_member(
    cfg: RunConfig,
    run_dir: Path,
    console: Any,
    bundle: Any = None,
    context: RunContext | None = None,
) -> dict:
    """Train member ``cfg.ensemble.member`` of a bag into ``run_dir``."""
    from dlrun.runner import instantiate, train_and_evaluate

    index = cfg.ensemble.member
    assert index is not None
    base = bundle or instantiate(cfg.data, seed=cfg.seed)
    # init and batch order; the data split stays the run's (the bundle is given, not
    # loaded again with this seed)
    member_cfg = replace(cfg, seed=member_seed(cfg.seed, index))
    resampled = bootstrap(base, cfg.seed, index)
    metrics = train_and_evaluate(member_cfg, run_dir, console, resampled, context=context)
    metrics["member"] = {"index": index, "seed": member_cfg.seed, "bootstrap": True}
    return metrics


def bag(
    cfg: RunConfig, run_dir: Path, console: Any, context: RunContext | None = None
) -> dict[str, Any]:
    """Train ``ensemble.bagging`` members one after another, then evaluate them together."""
    from dlrun.data.contract import save_contract
    from dlrun.evaluation.files import write_json
    from dlrun.rundir import finished_metrics
    from dlrun.runner import instantiate

    n = cfg.ensemble.bagging
    base = instantiate(cfg.data, seed=cfg.seed)
    save_contract(run_dir, base)  # the ensemble's contract: the unresampled training data
    names, trained = [], []
    for index in range(n):
        member_dir = run_dir / f"member_{index + 1}"
        names.append(member_dir.name)
        done = finished_metrics(member_dir) if cfg.resume else None
        state = ": done" if done else ""
        console.print(f"member {index + 1}/{n} ({member_dir.name}){state}", highlight=False)
        if done is None:
            member_cfg = replace(
                cfg,
                ensemble=replace(cfg.ensemble, member=index),
                resume=_resume(cfg, member_dir),
            )
            member_dir.mkdir(parents=True, exist_ok=True)
            _copy_config(run_dir, member_dir, index)
            done = train_member(member_cfg, member_dir, console, base, context)
            write_json(member_dir / "metrics.json", done)
        trained.append(done)
    write_ensemble(run_dir, names, cfg.ensemble.method, {"bagging": n})
    metrics = evaluate(run_dir, console, base, cfg.eval.threshold)
    metrics["train"] = _train_summary(trained)
    return metrics


def _resume(cfg: RunConfig, member_dir: Path) -> str | None:
    resumable = cfg.resume and (member_dir / "checkpoints" / "last.pt").is_file()
    return str(member_dir) if resumable else None


def _copy_config(run_dir: Path, member_dir: Path, index: int) -> None:
    """The member's ``.hydra/``: the bag's config (same model and data split), marked
    as member ``index``, so the member dir is a run dir dlrun-eval can open alone."""
    from omegaconf import OmegaConf

    source = run_dir / ".hydra"
    if not (source / "config.yaml").is_file():
        return
    target = member_dir / ".hydra"
    target.mkdir(exist_ok=True)
    cfg = OmegaConf.load(source / "config.yaml")
    cfg.ensemble.bagging, cfg.ensemble.member = 0, index
    OmegaConf.save(cfg, target / "config.yaml")
    if (source / "hydra.yaml").is_file():
        shutil.copyfile(source / "hydra.yaml", target / "hydra.yaml")


def _train_summary(members: list[dict[str, Any]]) -> dict[str, Any]:
    """The bag's ``train`` block: totals, and the members' mean best value (for sweeps)."""
    trains = [m["train"] for m in members]
    values = [t["best_value"] for t in trains if t.get("best_value") is not None]
    return {
        "epochs": max(t["epochs"] for t in trains),
        "best_value": sum(values) / len(values) if values else None,
        "best_epoch": None,
        "monitor": trains[0]["monitor"],
        "seconds": sum(t["seconds"] for t in trains),
        "parameters": sum(t["parameters"] for t in trains),
        "members": len(trains),
    }


def write_ensemble(out: Path, members: list[str], method: str, extra: dict | None = None) -> None:
    from dlrun.evaluation.files import write_json
    from dlrun.nn.ensemble import METHODS

    if method not in METHODS:
        raise UserError(f"ensemble method={method} is invalid: use {', '.join(METHODS)}")
    payload = {"method": method, "members": [{"dir": m} for m in members], **(extra or {})}
    write_json(out / "ensemble.json", payload)


def member_sources(runs: list[Path]) -> list[tuple[Path, Path]]:
    """Each member's (dir with its checkpoints, run dir with its ``.hydra`` config). A
    k-fold run stands for its fold models (``fold_1/`` ...): all were scored on the one
    untouched test split, so they ensemble like runs of one seed."""
    sources = []
    for run in runs:
        folds = [f for f in run.glob("fold_*") if (f / "checkpoints" / "best.pt").is_file()]
        if folds and not (run / "checkpoints").is_dir():
            folds.sort(key=lambda f: int(f.name[5:]) if f.name[5:].isdigit() else 0)
            sources += [(fold, run) for fold in folds]
        else:
            sources.append((run, run))
    if len(sources) < 2:
        raise UserError("an ensemble needs at least two models (runs, or a k-fold run's folds)")
    return sources


def _copy_run_config(run: Path, target: Path, fold: bool) -> None:
    """The run's ``.hydra``; a fold model's config says holdout: it is one model."""
    shutil.copytree(run / ".hydra", target / ".hydra")
    if fold:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(target / ".hydra" / "config.yaml")
        cfg.eval.protocol = "holdout"
        OmegaConf.save(cfg, target / ".hydra" / "config.yaml")


def assemble(runs: list[Path], out: Path, method: str) -> list[str]:
    """Copy ``runs`` (their config, checkpoints and contract) into ``out/members/``."""
    from dlrun.engine.checkpoint import copy_checkpoint
    from dlrun.rundir import write_json

    names = []
    for k, (run, config) in enumerate(member_sources(runs), start=1):
        if not (config / ".hydra" / "config.yaml").is_file():
            raise UserError(f"{config} is not a run dir (no .hydra/config.yaml)")
        if not (run / "checkpoints" / "best.pt").is_file():
            raise UserError(f"{run} has no checkpoints/best.pt: it did not train")
        name = run.name if run == config else f"{config.name}_{run.name}"
        target = out / "members" / f"{k}_{name}"
        (target / "checkpoints").mkdir(parents=True)
        _copy_run_config(config, target, fold=run != config)
        for ckpt in ("best.pt", "last.pt"):
            if (run / "checkpoints" / ckpt).is_file():
                copy_checkpoint(run / "checkpoints" / ckpt, target / "checkpoints" / ckpt)
        for name in MEMBER_FILES:
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
        names.append(str(target.relative_to(out)))
    for name in MEMBER_FILES[:3]:  # the contract, shared by all (checked on load)
        if (out / names[0] / name).is_file():
            shutil.copyfile(out / names[0] / name, out / name)
    write_ensemble(out, names, method, {"sources": [str(r) for r in runs]})
    write_json(out / "status.json", {"status": "completed", "reason": "dlrun-ensemble"})
    return names


def evaluate(out: Path, console: Any, bundle: Any = None, threshold: float | None = None) -> dict:
    """Score the ensemble in ``out`` on its members' test split; add the members table."""
    from dlrun.data.contract import fingerprint
    from dlrun.evaluation import evaluate_run, headline_table
    from dlrun.evaluation.files import write_json
    from dlrun.predictor import load_predictor
    from dlrun.runner import instantiate

    predictor = load_predictor(out, "best", "auto")
    cfg = predictor.cfg
    bundle = bundle or instantiate(cfg.data, seed=cfg.seed)
    if fingerprint(bundle.test) != predictor.contract.test_fingerprint:
        raise UserError(
            f"the test split loaded from {out}'s data config is not the one its members "
            "were tested on (did the data change?)"
        )
    threshold = cfg.eval.threshold if threshold is None else threshold
    method = json.loads((out / "ensemble.json").read_text())["method"]
    metrics = evaluate_run(
        predictor.model, bundle.to(predictor.device), out, splits=("test",),
        device=predictor.device, threshold=threshold,
        run_summary=f"ensemble ({method}) of {len(predictor.members)} members",
        plots=cfg.eval.plots,
    )  # fmt: skip
    metrics["ensemble"] = members_table(out, predictor.members, metrics, method)
    write_json(out / "metrics.json", metrics)
    _append_report(out / "report.md", metrics["ensemble"])
    console.print(headline_table(metrics))
    return metrics


def members_table(
    out: Path, members: list[str], metrics: dict[str, Any], method: str
) -> dict[str, Any]:
    """Each member's test metrics beside the ensemble's (all on the same test split)."""
    rows = {}
    for member in members:
        path = out / member / "metrics.json"
        test = read_json_dict(path).get("test", {})
        rows[member] = {k: test.get(k) for k in HEADLINE if k in test}
    keys = [k for k in HEADLINE if k in metrics["test"]]
    mean = {
        k: sum(r[k] for r in rows.values()) / len(rows)
        for k in keys
        if rows and all(isinstance(r.get(k), int | float) for r in rows.values())
    }
    return {
        "method": method,
        "n_members": len(members),
        "members": rows,
        "member_mean": mean,
        "ensemble": {k: metrics["test"][k] for k in keys},
        "baseline": {k: metrics["baseline"].get(k) for k in keys},
    }


def _append_report(path: Path, table: dict[str, Any]) -> None:
    from dlrun.display import number

    keys = list(table["ensemble"])
    lines = [
        "",
        f"## Ensemble ({table['method']}) and its {table['n_members']} members (test split)",
        "",
        "| model | " + " | ".join(keys) + " |",
        "| --- |" + " --- |" * len(keys),
        "| **ensemble** | " + " | ".join(number(table["ensemble"][k]) for k in keys) + " |",
    ]
    for name, row in table["members"].items():
        lines.append(f"| {name} | " + " | ".join(number(row.get(k)) for k in keys) + " |")
    for label, row in (("member mean", table["member_mean"]), ("baseline", table["baseline"])):
        lines.append(f"| {label} | " + " | ".join(number(row.get(k)) for k in keys) + " |")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def after_sweep(sweep_dir: Path, method: str, console: Any) -> Path | None:
    """After a sweep over ``ensemble.member``: its members as ``<sweep>/ensemble/``."""
    from dlrun import leaderboard

    jobs = [j for j in leaderboard.collect(sweep_dir) if j.status == "completed"]
    members = [j for j in jobs if j.overrides.get("ensemble.member") not in (None, "")]
    if not members:
        return None
    others = {k for j in members for k in j.overrides if k != "ensemble.member"}
    varied = [k for k in others if len({j.overrides.get(k) for j in members}) > 1]
    if varied:
        console.print(
            f"not building an ensemble: the sweep varies {', '.join(sorted(varied))} as well "
            "as ensemble.member (dlrun-ensemble runs=[...] combines the jobs you choose)"
        )
        return None
    from dlrun.rundir import claim_new_dir

    out = claim_new_dir("", sweep_dir, "ensemble")
    assemble([sweep_dir / j.name for j in members], out, method)
    evaluate(out, console)
    return out
