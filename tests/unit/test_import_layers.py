"""The top-level units of ``assay`` (a package or a top-level module) form layers: a unit imports only
from its own layer or a lower one, and no two units import each other, directly or around a loop.

Every ``import assay.X...`` / ``from assay.X... import`` is read from the source (module level and
inside functions alike: a lazy import is still a dependency), so this runs without importing assay.
"""

from __future__ import annotations

import ast
from pathlib import Path

import assay

ROOT = Path(assay.__file__).resolve().parent

LAYERS: list[tuple[str, set[str]]] = [
    # foundation: errors, names and places every other unit uses; no research content
    ("foundation", {"cards", "errors", "hub", "lazy", "paths", "provenance", "registry", "results", "runlog"}),
    # building blocks: run machinery independent of the examples (Lightning trainers and loggers, processes,
    # preemption, SLURM), sample orders over example indices, which the data module draws with, and the
    # optimal-transport numerics (pure tensors)
    ("building blocks", {"trainers", "loggers", "distributed", "preemption", "slurm", "ordering", "ot"}),
    # data: sources, mixtures, noise, tokenization and collation, the Lightning data module
    ("data", {"data"}),
    # models: the network and its tokenizer, text encoders; built for (and from) the data
    ("models", {"models", "embeddings"}),
    # methods: the research axes that train on the data with a model (losses, online mixing, training
    # dynamics, selection scorers)
    ("methods", {"objectives", "mixing", "dynamics", "selection"}),
    # run assembly: the composed config, the Lightning module and its held-out comparisons against the
    # starting model, checks before a run, run directories
    ("run assembly", {"config", "module", "heldout", "preflight", "rundir"}),
    # entry points: the commands (assay-train, assay-list, assay-compare, assay-mix, assay-study, assay-provenance)
    # and the Flower launcher
    ("entry points", {"train", "catalog", "compare", "collab", "mixsearch", "study", "tracing"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def _module_name(file: Path) -> str:
    parts = ["assay", *file.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where, for every import of another unit of assay."""
    edges: dict[tuple[str, str], list[str]] = {}
    for file in sorted(ROOT.rglob("*.py")):
        module = _module_name(file)
        unit = file.relative_to(ROOT).parts[0].removesuffix(".py")
        package = module if file.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from assay import distributed`` names the unit in the imported names
                targets = [f"{base}.{a.name}" for a in node.names] if base == "assay" else [base]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == "assay" and len(parts) > 1 and parts[1] != unit:
                    edges.setdefault((unit, parts[1]), []).append(f"{module}:{node.lineno}")
    return edges


def units() -> set[str]:
    return {p.name.removesuffix(".py") for p in ROOT.iterdir() if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}


def test_every_unit_has_a_layer():
    assert sorted(units() - set(LAYER_OF)) == [], "add the new unit to a layer in LAYERS"
    assert sorted(set(LAYER_OF) - units()) == [], "LAYERS names a unit that no longer exists"


def test_units_import_only_their_own_layer_or_lower():
    upward = [
        f"{a} ({LAYERS[LAYER_OF[a]][0]}) imports {b} ({LAYERS[LAYER_OF[b]][0]}) at {', '.join(where)}"
        for (a, b), where in sorted(imports().items())
        if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] > LAYER_OF[a]
    ]
    assert upward == []


def test_no_import_cycle_between_units():
    edges = imports()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                loop = path[path.index(v):] + [v]
                cycles.append(" -> ".join(loop) + "  (" + "; ".join(f"{x}->{y} at {edges[(x, y)][0]}" for x, y in zip(loop, loop[1:])) + ")")
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    assert cycles == []


def test_the_reader_sees_lazy_and_relative_imports():
    """The edges include imports inside functions (``train`` dispatches to ``collab`` lazily)."""
    edges = imports()
    assert ("train", "collab") in edges and ("registry", "errors") in edges
