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
    "scoresde/evaluation/metrics.py": "evaluation",
    "scoresde/evaluation/images.py": "evaluation",
    "scoresde/evaluation/report.py": "evaluation",
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
