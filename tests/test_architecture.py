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
    "scoresde/checks.py": "base",
    "scoresde/choices.py": "base",
    "scoresde/atomic.py": "base",
    "scoresde/progress.py": "base",
    "scoresde/rng.py": "base",
    # core: the SDE, models, oracles, networks, the probability flow, the bits/dim scaling, the loss
    "scoresde/schedules.py": "core",
    "scoresde/sde.py": "core",
    "scoresde/model.py": "core",
    "scoresde/analytic.py": "core",
    "scoresde/lattice.py": "core",
    "scoresde/flow.py": "core",
    "scoresde/bpd.py": "core",
    "scoresde/losses.py": "core",
    "scoresde/nets/__init__.py": "core",
    "scoresde/nets/embeddings.py": "core",
    "scoresde/nets/mlp.py": "core",
    "scoresde/nets/unet.py": "core",
    # data: the data-set table, readers and the loader
    "scoresde/toy.py": "data",
    "scoresde/data_files.py": "data",
    "scoresde/datasets.py": "data",
    "scoresde/data.py": "data",
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
    "scoresde/likelihood.py": "likelihood",
    "scoresde/vlb.py": "likelihood",
    "scoresde/vlb_grid.py": "likelihood",
    "scoresde/baselines.py": "likelihood",
    # evaluation: figures of a trained model
    "scoresde/evaluation.py": "evaluation",
    "scoresde/metrics.py": "evaluation",
    "scoresde/images.py": "evaluation",
    "scoresde/report.py": "evaluation",
    # training: config, building, the training state and its files
    "scoresde/config_rules.py": "training",
    "scoresde/config.py": "training",
    "scoresde/build.py": "training",
    "scoresde/checkpoint.py": "training",
    "scoresde/ema.py": "training",
    "scoresde/trainer.py": "training",
    "scoresde/distributed.py": "training",
    "scoresde/runlog.py": "training",
    "scoresde/interop.py": "training",
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
    "programs": {"base", "core", "data", "samplers", "likelihood", "evaluation", "training", "programs"},
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
    assert "scoresde.checks" in graph["scoresde.samplers.ode"]  # from ..checks import ...
    assert "scoresde.flow" in graph["scoresde.samplers.ode"]
    assert "scoresde.samplers.base" in graph["scoresde.samplers.ode"]  # from .base import ...
    assert "scoresde.choices" in graph["scoresde.config_rules"]  # from . import choices


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
