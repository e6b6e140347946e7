"""The package's layers (docs/architecture.md, "Layers"): no module imports one at a higher layer.

Every module's imports are read from its source (``ast``, imports inside functions included) and
resolved to package modules. ``LAYER`` places every module of the package in a layer; ``MAY_IMPORT``
says which layers a layer may import. When modules move (the subpackage layout of
docs/architecture.md), only ``LAYER``'s keys change.

``python -m tests.test_architecture [ROOT]`` prints the import graph (module → package modules it
imports) of this checkout or of the checkout at ``ROOT``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scoresde"

# Module path (relative to the repository) → layer. Every module of the package must be listed.
LAYER = {
    # base: plain helpers that import nothing from the package
    "scoresde/util/__init__.py": "base",
    "scoresde/util/checks.py": "base",
    "scoresde/util/choices.py": "base",
    "scoresde/util/atomic.py": "base",
    "scoresde/util/progress.py": "base",
    "scoresde/util/rng.py": "base",
    "scoresde/util/host.py": "base",
    "scoresde/util/errors.py": "base",
    "scoresde/util/lock.py": "base",
    # core: the SDE, models, oracles, networks, the probability flow, the bits/dim scaling, the loss
    "scoresde/core/__init__.py": "core",
    "scoresde/core/schedules.py": "core",
    "scoresde/core/sde.py": "core",
    "scoresde/core/model.py": "core",
    "scoresde/core/analytic.py": "core",
    "scoresde/core/conditional.py": "core",
    "scoresde/core/lattice.py": "core",
    "scoresde/core/flow.py": "core",
    "scoresde/core/bpd.py": "core",
    "scoresde/core/losses.py": "core",
    "scoresde/nets/__init__.py": "core",
    "scoresde/nets/embeddings.py": "core",
    "scoresde/nets/mlp.py": "core",
    "scoresde/nets/unet.py": "core",
    "scoresde/interop/adapter.py": "core",
    # data: the data-set table, readers and the loader
    "scoresde/data/__init__.py": "data",
    "scoresde/data/toy.py": "data",
    "scoresde/data/files.py": "data",
    "scoresde/data/table.py": "data",
    "scoresde/data/loader.py": "data",
    # samplers
    "scoresde/samplers/__init__.py": "samplers",
    "scoresde/samplers/base.py": "samplers",
    "scoresde/samplers/ancestral.py": "samplers",
    "scoresde/samplers/ddim.py": "samplers",
    "scoresde/samplers/dpmpp.py": "samplers",
    "scoresde/samplers/heun.py": "samplers",
    "scoresde/samplers/ode.py": "samplers",
    "scoresde/samplers/pc.py": "samplers",
    "scoresde/samplers/reverse_sde.py": "samplers",
    "scoresde/samplers/impute.py": "samplers",
    # likelihood: the bits/dim estimators
    "scoresde/likelihood/__init__.py": "likelihood",
    "scoresde/likelihood/ode.py": "likelihood",
    "scoresde/likelihood/vlb.py": "likelihood",
    "scoresde/likelihood/vlb_grid.py": "likelihood",
    "scoresde/likelihood/baselines.py": "likelihood",
    # evaluation: figures of a trained model
    "scoresde/evaluation/__init__.py": "evaluation",
    "scoresde/evaluation/bpd_eval.py": "evaluation",
    "scoresde/evaluation/conditional.py": "evaluation",
    "scoresde/evaluation/guidance.py": "evaluation",
    "scoresde/evaluation/metrics.py": "evaluation",
    "scoresde/evaluation/images.py": "evaluation",
    "scoresde/evaluation/report.py": "evaluation",
    "scoresde/evaluation/inpaint.py": "evaluation",
    "scoresde/evaluation/fid.py": "evaluation",
    # training: config, building, the training state and its files
    "scoresde/training/__init__.py": "training",
    "scoresde/training/config_rules.py": "training",
    "scoresde/training/config.py": "training",
    "scoresde/training/build.py": "training",
    "scoresde/training/checkpoint.py": "training",
    "scoresde/training/ema.py": "training",
    "scoresde/training/trainer.py": "training",
    "scoresde/training/distributed.py": "training",
    "scoresde/training/runlog.py": "training",
    "scoresde/interop/__init__.py": "training",
    "scoresde/interop/loader.py": "training",
    "scoresde/interop/export.py": "training",
    "scoresde/training/bounds.py": "training",
    # run: a training run from its folder to its report (joins training and evaluation)
    "scoresde/training/run.py": "run",
    # programs: the command lines and the public API
    "scoresde/cli.py": "programs",
    "scoresde/train.py": "programs",
    "scoresde/sample.py": "programs",
    "scoresde/evaluate.py": "programs",
    "scoresde/__init__.py": "programs",
}

# Layer → the layers its modules may import (its own included). Estimators (likelihood) import
# neither samplers nor the data loader; nothing below the programs imports the command line.
MAY_IMPORT = {
    "base": {"base"},
    "core": {"base", "core"},
    "data": {"base", "core", "data"},
    "samplers": {"base", "core", "samplers"},
    "likelihood": {"base", "core", "likelihood"},
    "evaluation": {"base", "core", "data", "samplers", "likelihood", "evaluation"},
    "training": {"base", "core", "data", "training"},
    "run": {"base", "core", "data", "samplers", "likelihood", "evaluation", "training", "run"},
    "programs": {"base", "core", "data", "samplers", "likelihood", "evaluation", "training", "run", "programs"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict) -> str | None:
    """The package module ``name`` refers to: itself, or the longest listed prefix (a name
    imported from a module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module name → the package modules it imports (anywhere in its source)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    found.add(resolved)
        graph[name] = found
    return graph


def _layer(name: str) -> str:
    path = _modules()[name].relative_to(ROOT).as_posix()
    return LAYER[path]


def test_every_module_has_a_layer():
    paths = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    assert paths - set(LAYER) == set(), "place these modules in LAYER"
    assert set(LAYER) - paths == set(), "LAYER lists modules that do not exist"
    assert set(LAYER.values()) <= set(MAY_IMPORT)


def test_no_module_imports_a_higher_layer():
    bad = []
    for name, imports in import_graph().items():
        for target in imports:
            if _layer(target) not in MAY_IMPORT[_layer(name)]:
                bad.append(f"{name} ({_layer(name)}) imports {target} ({_layer(target)})")
    assert not bad, "\n".join(bad)


def test_base_modules_import_nothing_from_the_package():
    graph = import_graph()
    for name in graph:
        if _layer(name) == "base":
            assert not graph[name], (name, graph[name])


def test_the_import_graph_sees_relative_and_nested_imports():
    """The parser resolves ``from ..x import y`` in a subpackage and ``from . import x``."""
    graph = import_graph()
    assert "scoresde.util.checks" in graph["scoresde.samplers.ode"]  # from ..checks import ...
    assert "scoresde.core.flow" in graph["scoresde.samplers.ode"]
    assert "scoresde.samplers.base" in graph["scoresde.samplers.ode"]  # from .base import ...
    assert "scoresde.util.choices" in graph["scoresde.training.config_rules"]  # from . import choices


# Sizes (docs/architecture.md, "Sizes"): a program is argument parsing plus one call; a function
# fits on a screen and takes few enough parameters to read at the call site.
PROGRAM_LINES = 150
FUNCTION_LINES = 60
FUNCTION_PARAMETERS = 8

# Functions kept over the limits, each with its reason (also listed in docs/architecture.md).
EXCEPTIONS = {
    "scoresde/core/flow.py::solve_flow": "the one flow solver: every option of torchdiffeq's odeint it forwards",
    "scoresde/core/flow.py::integrate_flow": "solve_flow's checked core: the same odeint options",
    "scoresde/core/losses.py::sample_time": "public: the loss's time-sampling options as keywords",
    "scoresde/core/losses.py::dsm_loss": "public: the loss's weighting, time-sampling and label options as keywords",
    "scoresde/evaluation/fid.py::sample_fid": "public: sampler options and the metric's (extractor, batch, cache)",
    "scoresde/likelihood/baselines.py::gmm_bits_per_dim": "public estimator signature (keyword options)",
    "scoresde/likelihood/ode.py::log_likelihood": "public estimator signature (keyword solver and trace options)",
    "scoresde/likelihood/vlb.py::vlb_term": "public: one term of the bound with its grid and variance options",
    "scoresde/likelihood/vlb.py::ddpm_vlb_bits_per_dim": "public estimator signature (keyword options)",
    "scoresde/nets/unet.py::UNet.__init__": "the U-Net's layer table, built in one place",
    "scoresde/evaluation/report.py::write_samples": "the sample program's flags as keywords, class and guidance too",
    "scoresde/samplers/base.py::open_run": "every sampler's opening: the shared sampler options in one call",
    "scoresde/samplers/impute.py::impute": "public front door: the samplers' keywords, each method's options, "
                                           "their checks and the two edge cases (all or nothing observed)",
    "scoresde/evaluation/inpaint.py::inpaint": "public: the --inpaint flags as keywords",
    "scoresde/evaluation/inpaint.py::write_inpainting": "the --inpaint program body: its flags as keywords",
}


def _functions(path: Path):
    """``(qualified name, lines, parameters)`` of every function and method in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
                count -= bool(names) and names[0] in ("self", "cls")
                out.append((prefix + child.name, child.end_lineno - child.lineno + 1, count))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(tree, "")
    return out


def size_violations() -> dict[str, str]:
    """``path::function`` → what is over the limit, for every function of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, lines, params in _functions(path):
            over = [f"{lines} lines"] if lines > FUNCTION_LINES else []
            over += [f"{params} parameters"] if params > FUNCTION_PARAMETERS else []
            if over:
                found[f"{path.relative_to(ROOT).as_posix()}::{name}"] = ", ".join(over)
    return found


def test_program_modules_are_short():
    for path, layer in LAYER.items():
        if layer == "programs":
            n = len((ROOT / path).read_text().splitlines())
            assert n <= PROGRAM_LINES, f"{path}: {n} lines, expected ≤ {PROGRAM_LINES} (move the work below)"


def test_no_function_is_over_the_limits_unless_listed_with_a_reason():
    found = size_violations()
    unlisted = {k: v for k, v in found.items() if k not in EXCEPTIONS}
    assert not unlisted, (f"over {FUNCTION_LINES} lines or {FUNCTION_PARAMETERS} parameters: {unlisted}; "
                          f"split it, or list it in EXCEPTIONS and docs/architecture.md with the reason")
    stale = sorted(set(EXCEPTIONS) - set(found))
    assert not stale, f"EXCEPTIONS lists functions within the limits now: {stale}; delete those lines"


def test_the_size_counter_counts_lines_and_parameters(tmp_path):
    """The counter on a file whose answer is known: methods qualified, self not counted, *args one."""
    path = tmp_path / "m.py"
    path.write_text("def f(a, b, *c, d=1, **e):\n    pass\n\n\nclass K:\n    def g(self, x):\n"
                    "        def inner():\n            return x\n        return inner\n")
    assert _functions(path) == [("f", 2, 5), ("K.g", 4, 1), ("K.g.inner", 2, 0)]


def main() -> None:
    graph = import_graph()
    for name in sorted(graph):
        layer = LAYER.get(_modules()[name].relative_to(ROOT).as_posix(), "?")
        shown = ", ".join(sorted(m.removeprefix("scoresde.") for m in graph[name])) or "-"
        print(f"{name.removeprefix('scoresde.') or '__init__'} [{layer}] -> {shown}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        ROOT = Path(sys.argv[1]).resolve()
        PACKAGE = ROOT / "scoresde"
    main()
