"""The shape of the code, checked: short functions, dependencies one way, no cycles.

Parsed with ``ast``, so these tests import nothing they check (one subprocess proves the
engine runs without Hydra). Every import counts, also those inside functions and under
``TYPE_CHECKING``: a cycle a type checker has to untangle is still a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 60

# Lowest layer first. A module may import modules of its own layer or of a lower one,
# never of a higher one: cli -> runner -> engine/evaluation -> models/nn -> data ->
# foundation. The longest prefix that matches a module places it. A new module must be
# placed here (the test says so), which is the moment to decide what it may import.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",  # config, tasks and the vocabulary every layer shares
        (
            "dlrun",
            "dlrun.errors",
            "dlrun.display",
            "dlrun.monitor",
            "dlrun.config",
            "dlrun.tasks",
            "dlrun.metric_registry",
            "dlrun.data.spec",
            "dlrun.rundir",
        ),
    ),
    ("data", ("dlrun.data",)),
    ("models", ("dlrun.nn", "dlrun.models")),
    ("engine/evaluation", ("dlrun.engine", "dlrun.evaluation", "dlrun.diagnostics")),
    (
        "runner",
        ("dlrun.runner", "dlrun.crossval", "dlrun.sweep", "dlrun.tracking", "dlrun.transfer"),
    ),
    (
        "cli",  # entry points, Hydra's callbacks and plugins, reading saved runs
        (
            "dlrun.cli",
            "dlrun.cli_args",
            "dlrun.compare",
            "dlrun.eval_cli",
            "dlrun.generate_cli",
            "dlrun.diagnostics.command",  # dlrun-gradcheck, dlrun-lrfind, dlrun-inspect
            "dlrun.diagnostics.gradcheck",
            "dlrun.diagnostics.lrfind",
            "dlrun.diagnostics.inspection",
            "dlrun.diagnostics.inspect_plots",
            "dlrun.hydra_callbacks",
            "dlrun.overrides",
            "dlrun.trust",
            "dlrun.restore",
            "dlrun.leaderboard",
            "dlrun.sweepdir",
            "dlrun.predictor",  # a saved run (restore) ready to predict
            "dlrun.export",
            "dlrun.ensembling",
            "dlrun.predict_cli",
            "dlrun.export_cli",
            "dlrun.serve",
            "dlrun.serve_cli",
            "dlrun.ensemble_cli",
            "hydra_plugins",
        ),
    ),
]
# Packages that the layers below the runner never import: the engine is handed built
# objects, so it runs (and is tested) without Hydra.
HYDRA = ("hydra", "omegaconf")
HYDRA_FREE = ("dlrun.engine", "dlrun.evaluation", "dlrun.data", "dlrun.nn")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _imports(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``tree``; ``from a import b`` is
    ``a.b`` when that is a module of ours (a submodule), else ``a``."""
    ours = _modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield (full if full in ours else node.module), node.lineno


def _layer(module: str) -> int:
    best, found = -1, None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best:
                best, found = len(prefix), rank
    if found is None:
        raise AssertionError(f"{module} is in no layer: place it in LAYERS ({__file__})")
    return found


def _internal_edges() -> dict[str, set[str]]:
    ours = _modules()
    return {
        name: {target for target, _ in _imports(tree) if target in ours and target != name}
        for name, tree in ours.items()
    }


def function_lengths(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """``(name, first line, lines)`` of every function and method, ``def`` to last line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_60_lines() -> None:
    long = [
        f"{name.replace('.', '/')}.py:{line} {function}() has {n} lines"
        for name, tree in _modules().items()
        for function, line, n in function_lengths(tree)
        if n > MAX_LINES
    ]
    assert not long, f"split these (at most {MAX_LINES} lines a function):\n" + "\n".join(long)


def test_a_lower_layer_never_imports_a_higher_one() -> None:
    wrong = []
    for name, tree in _modules().items():
        for target, line in _imports(tree):
            if target in _modules() and _layer(target) > _layer(name):
                wrong.append(
                    f"{name}:{line} imports {target} "
                    f"({LAYERS[_layer(name)][0]} -> {LAYERS[_layer(target)][0]})"
                )
    assert not wrong, "dependencies must point down the layers:\n" + "\n".join(wrong)


def test_there_are_no_import_cycles() -> None:
    edges = _internal_edges()
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_module_uses_another_modules_private_names() -> None:
    wrong = [
        f"{name}:{node.lineno} imports {alias.name} from {node.module}"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlrun")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not wrong, "make these public (no leading underscore) or keep them local:\n" + (
        "\n".join(wrong)
    )


def test_the_engine_and_the_layers_below_never_import_hydra() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name, tree in _modules().items()
        if name.startswith(HYDRA_FREE)
        for target, line in _imports(tree)
        if target.split(".")[0] in HYDRA
    ]
    assert not wrong, "\n".join(wrong)


def test_training_loads_no_hydra() -> None:
    """The engine's modules and what they import at run time, in a fresh interpreter."""
    code = (
        "import sys\n"
        "import dlrun.engine.trainer, dlrun.engine.callbacks, dlrun.engine.launch, "
        "dlrun.engine.schedules, dlrun.engine.resume, dlrun.engine.distributed\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_function_lengths_count_from_def_to_the_last_line() -> None:
    source = "def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n    pass\n"
    found = [(name, n) for name, _, n in function_lengths(ast.parse(source))]
    assert found == [("f", MAX_LINES + 1), ("g", 2)]


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, _strongly_connected(edges))) == [["a", "b", "c"], ["d"]]


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of a graph (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                out.append(component)
    return out
