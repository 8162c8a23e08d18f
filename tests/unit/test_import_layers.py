"""The units of ``assay`` form layers: a unit imports only
from its own layer or a lower one, within a layer that declares an order only from its own tier or
an earlier one, and no two units import each other, directly or around a loop. Inside the units, no
two modules import each other around a loop either.

A unit is a top-level module or package of ``assay``, except for the packages in ``SPLIT``, whose
modules are units of their own. ``assay.run`` is one: its modules are run machinery at different
heights (``run.log`` and ``run.results`` are read by the data and the methods; ``run.preflight``
composes the config the methods register into), so as one unit it would have to sit at run assembly,
and ``assay.data`` logging through ``run.log`` would then count as an import running back up. Each
``run.<module>`` has its own layer instead; a split package's ``__init__`` imports nothing (it only
documents its modules), so importing one of its modules never loads the others.

Every ``import assay.X...`` / ``from assay.X... import`` is read from the source (module level and
inside functions alike: a lazy import is still a dependency), so this runs without importing assay.
String imports count too: ``importlib.import_module("assay.X")`` (and ``__import__``, ``lazy_function``,
``LazyModule``, ``registry.discover``), a ``_target_`` default naming ``assay.X...`` in the source, and
``_target_: assay.X...`` in ``conf/**/*.yaml``. ``src/hydra_plugins/`` (where Hydra finds assay's
launcher) is read as well: it is loaded by the entry points' Hydra, so it may import what an entry
point could and nothing in assay may import it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

import assay

ROOT = Path(assay.__file__).resolve().parent
SRC = ROOT.parent
PLUGINS = SRC / "hydra_plugins"
CONF = SRC.parent / "conf"

SPLIT = {"run"}
"""Packages whose modules are each a unit (``run.log``, ``run.preflight``)."""

LAYERS: list[tuple[str, set[str]]] = [
    # foundation: errors, names and places every other unit uses; no research content (metric names
    # and what a run prints among them)
    ("foundation", {"cards", "errors", "hub", "lazy", "paths", "provenance", "registry", "run.results", "run.log", "run.progress", "run.progress_bars"}),
    # building blocks: run machinery independent of the examples (Lightning trainers and loggers, processes,
    # preemption, SLURM, run directories and resuming, sweep expansion, the checks of data files, cluster
    # and machine, the machine's peak FLOP/s and every run's throughput), sample orders over example indices, which the data module draws with, and the
    # optimal-transport numerics (pure tensors)
    ("building blocks", {"trainers", "loggers", "run.distributed", "run.preemption", "run.slurm", "run.cluster", "run.machine",
                         "run.datachecks", "run.sweeps", "run.stages", "run.dirs", "run.resume", "run.frozen_base", "run.peak", "run.speed", "ordering", "ot"}),
    # data: sources, mixtures, noise, tokenization and collation, the Lightning data module
    ("data", {"data"}),
    # models: the network and its tokenizer, text encoders; built for (and from) the data
    ("models", {"models", "embeddings"}),
    # methods: the research axes that train on the data with a model (losses, online mixing, training
    # dynamics, selection scorers)
    ("methods", {"objectives", "mixing", "dynamics", "selection", "batch_selection"}),
    # run assembly: the composed config, the Lightning module and its held-out comparisons against the
    # starting model, the checks of every job before a command runs
    ("run assembly", {"config", "module", "heldout", "samples", "run.preflight"}),
    # entry points: the commands (assay-train, assay-list, assay-compare, assay-mix, assay-attribution) and the Flower launcher;
    # ``hydra_plugins`` (outside the package, loaded by an entry point's Hydra) and ``conf`` (the ``_target_``
    # strings Hydra instantiates for an entry point) count as entry points too
    ("entry points", {"train", "catalog", "compare", "collab", "mixsearch", "study", "tracing", "attribution", "hydra_plugins", "conf"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}

ORDER: dict[str, list[set[str]]] = {
    # the registry finds the config directory (paths); both raise the errors' one-line messages
    "foundation": [{"errors"}, {"paths"}, {"registry"}],
    # embedders run the model (its passes, its cache directory); the model knows nothing of embedders
    "models": [{"models"}, {"embeddings"}],
    # online mixers and scorers use what the losses compute (log-probs, references) and what the
    # dynamics store and checkpoints hold; losses and dynamics use neither mixers nor scorers
    "methods": [{"objectives", "dynamics"}, {"mixing", "selection", "batch_selection"}],
    # the commands built on others: assay-train dispatches to the Flower launcher, assay-list lists
    # the mixture-search and collaborative registries, a study reports with assay-compare
    "entry points": [{"collab", "mixsearch", "compare"}, {"train", "catalog", "study", "hydra_plugins", "conf"}],
}
"""Layers whose units have a direction: tiers, lower first. A unit imports from its own tier or an
earlier one, never a later one; units a layer's tiers do not list are left free."""
TIER_OF = {unit: i for tiers in ORDER.values() for i, tier in enumerate(tiers) for unit in tier}

STRING_IMPORTERS = {"import_module", "__import__", "lazy_function", "LazyModule"}
"""Calls whose first argument, a string, names a module they import."""
ALL_ARGS_IMPORTERS = {"discover"}
"""Calls every string argument of which names a module they import (``registry.discover``)."""


@dataclass(frozen=True)
class Edge:
    source: str
    """The importing module (``assay.x.y``, ``hydra_plugins.x``), or a config file (``conf/<path>.yaml``)."""
    target: str
    """The imported module: the longest prefix of the imported name that is a module here."""
    where: str


def _files() -> dict[str, Path]:
    """Module name -> file, for assay and hydra_plugins."""
    out = {}
    for base in (ROOT, PLUGINS):
        for file in sorted(base.rglob("*.py")):
            parts = [base.name, *file.relative_to(base).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` lands in: itself, or its longest prefix that is a module (``assay.x.Y``:
    the name ``Y`` of module ``assay.x``); None outside assay and hydra_plugins."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _strings(nodes) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _imported_names(tree: ast.AST, package: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(dotted name, line) of everything a module's source imports, string imports included."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from assay.x import y`` imports the module ``assay.x.y`` when there is one
            out += [(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, node.lineno) for a in node.names]
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in STRING_IMPORTERS:
                out += [(s, node.lineno) for s in _strings(node.args[:1])]
            elif name in ALL_ARGS_IMPORTERS:  # the package, its sub-packages and every module that registers
                out += [(m, node.lineno) for s in _strings(node.args) for m in _discovered(s, modules)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # ``_target_ = "assay.x.Y"`` (a config default Hydra instantiates)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_target_" for t in targets):
                out += [(s, node.lineno) for s in _strings([node.value])]
        elif isinstance(node, ast.Dict):  # ``{"_target_": "assay.x.Y", ...}``
            out += [(v.value, node.lineno) for k, v in zip(node.keys, node.values)
                    if isinstance(k, ast.Constant) and k.value == "_target_" and isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return out


def _discovered(package: str, modules: dict[str, Path]) -> list[str]:
    """What ``registry.discover(package)`` imports: the package, and below it every sub-package and
    every module whose source registers an entry (``@register(``)."""
    if package not in modules or modules[package].name != "__init__.py":
        return [package]
    return [package] + [m for m, f in modules.items() if m.startswith(package + ".") and (f.name == "__init__.py" or "@register(" in f.read_text())]


def _conf_targets() -> list[tuple[str, str]]:
    """(``_target_`` value, where) for every ``_target_`` in conf/**/*.yaml."""
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_" and isinstance(v, str):
                    out.append((v, where))
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for file in sorted(CONF.rglob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            walk(doc, str(file.relative_to(CONF.parent)))
    return out


@lru_cache(maxsize=None)
def module_edges() -> tuple[Edge, ...]:
    """Every import of one module of assay or hydra_plugins by another (or by conf/). Importing
    ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit imports are not edges (a
    package's ``__init__`` hands its modules' names on, so they would always close a loop), but an
    explicit ``from a.b import X`` of the package is."""
    modules = _files()
    edges: dict[Edge, None] = {}  # in order, once each
    for module, file in modules.items():
        package = module if file.name == "__init__.py" else module.rsplit(".", 1)[0]
        for name, line in _imported_names(ast.parse(file.read_text(), str(file)), package, modules):
            target = _resolve(name, modules)
            if target is not None and target != module:
                edges[Edge(module, target, f"{module}:{line}")] = None
    for value, where in _conf_targets():
        target = _resolve(value, modules)
        if target is not None:
            edges[Edge(where, target, where)] = None
    return tuple(edges)


def unit_of(module: str) -> str:
    """The unit a module belongs to (``assay.selection.base`` -> ``selection``, ``assay.run.log`` -> ``run.log``)."""
    if module.startswith("conf/"):
        return "conf"
    parts = module.split(".")
    if parts[0] == "hydra_plugins" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[1:3]) if parts[1] in SPLIT and len(parts) > 2 else parts[1]


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where, for every import of another unit."""
    edges: dict[tuple[str, str], list[str]] = {}
    for e in module_edges():
        a, b = unit_of(e.source), unit_of(e.target)
        if a != b and b != "assay":
            edges.setdefault((a, b), []).append(e.where)
    return edges


def units() -> set[str]:
    found = {p.name.removesuffix(".py") for p in ROOT.iterdir() if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    split = {f"{name}.{p.name.removesuffix('.py')}" for name in SPLIT for p in (ROOT / name).iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    return (found - SPLIT) | split | {"hydra_plugins", "conf"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop through every strongly connected component of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_loop_in(set(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _loop_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest loop through the component's first node (breadth first, inside the component)."""
    start = min(component)
    previous: dict[str, str | None] = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(graph.get(v, set()) & component):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return sorted(component)


def _describe(loop: list[str], where: dict[tuple[str, str], list[str]]) -> str:
    return " -> ".join(loop) + "  (" + "; ".join(f"{x}->{y} at {where[(x, y)][0]}" for x, y in zip(loop, loop[1:])) + ")"


def test_every_unit_has_a_layer():
    assert sorted(units() - set(LAYER_OF)) == [], "add the new unit to a layer in LAYERS"
    assert sorted(set(LAYER_OF) - units()) == [], "LAYERS names a unit that no longer exists"


def test_every_tier_names_units_of_its_layer():
    layer_units = dict(LAYERS)
    for layer, tiers in ORDER.items():
        assert layer in layer_units, f"ORDER names a layer LAYERS does not have: {layer}"
        listed = [u for tier in tiers for u in tier]
        assert len(listed) == len(set(listed)), f"a unit is in two tiers of {layer}"
        assert sorted(set(listed) - layer_units[layer]) == [], f"ORDER[{layer!r}] names units outside the layer"


def test_units_import_only_their_own_layer_or_lower():
    upward = [
        f"{a} ({LAYERS[LAYER_OF[a]][0]}) imports {b} ({LAYERS[LAYER_OF[b]][0]}) at {', '.join(where)}"
        for (a, b), where in sorted(imports().items())
        if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] > LAYER_OF[a]
    ]
    assert upward == []


def test_units_import_only_their_own_tier_or_an_earlier_one():
    """Within a layer that declares an order (``ORDER``), imports run from later tiers to earlier ones."""
    backward = [
        f"{a} imports {b} at {', '.join(where)}, a later tier of {LAYERS[LAYER_OF[a]][0]!r}"
        for (a, b), where in sorted(imports().items())
        if a in TIER_OF and b in TIER_OF and LAYER_OF[a] == LAYER_OF[b] and TIER_OF[b] > TIER_OF[a]
    ]
    assert backward == []


def test_nothing_in_assay_imports_hydra_plugins():
    """The launcher plugin is found by Hydra (``_target_`` in conf/hydra/launcher), never imported by assay."""
    assert [e.where for e in module_edges() if e.target.startswith("hydra_plugins") and e.source.startswith("assay")] == []


def test_no_import_cycle_between_units():
    edges = imports()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    assert [_describe(loop, edges) for loop in _cycles(graph)] == []


def test_no_import_cycle_between_modules():
    """No loop of modules, inside a package or across packages, lazy imports included: a loop hidden
    by a function-level import still means neither module can be read (or moved) without the other."""
    where: dict[tuple[str, str], list[str]] = {}
    graph: dict[str, set[str]] = {}
    for e in module_edges():
        graph.setdefault(e.source, set()).add(e.target)
        where.setdefault((e.source, e.target), []).append(e.where)
    assert [_describe(loop, where) for loop in _cycles(graph)] == []


def test_every_string_import_names_a_module_that_exists():
    """``_target_`` and ``import_module`` strings naming assay (or hydra_plugins) resolve to a module and,
    past the module, to a name defined at its top level: a move or rename cannot silently break them."""
    modules = _files()
    missing = []
    strings = [(v, w) for v, w in _conf_targets()]
    for module, file in modules.items():
        tree = ast.parse(file.read_text(), str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) in STRING_IMPORTERS | ALL_ARGS_IMPORTERS:
                args = node.args if _call_name(node) in ALL_ARGS_IMPORTERS else node.args[:1]
                strings += [(s, f"{module}:{node.lineno}") for s in _strings(args)]
    for value, where in strings:
        if value.split(".")[0] not in ("assay", "hydra_plugins"):
            continue
        target = _resolve(value, modules)
        rest = value[len(target) + 1:].split(".")[0] if target is not None and value != target else None
        if target is None or (rest and rest not in _top_level_names(modules[target])):
            missing.append(f"{value!r} at {where}")
    assert missing == []


def _top_level_names(file: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_the_reader_sees_lazy_relative_string_and_plugin_imports():
    """The edges include imports inside functions (``train`` dispatches to ``collab`` lazily), string
    imports (``config`` discovers the registering packages by name), the plugin's import of assay
    and conf's ``_target_`` of the plugin."""
    edges = imports()
    assert ("train", "collab") in edges and ("registry", "errors") in edges
    assert any(w.startswith("assay.config:") for w in edges[("config", "embeddings")])
    assert ("hydra_plugins", "run.slurm") in edges and ("conf", "hydra_plugins") in edges


def test_the_module_reader_finds_a_loop_hidden_by_a_lazy_import(tmp_path):
    """The loop check on a made-up graph: a -> b at module level, b -> a inside a function."""
    graph = {"p.a": {"p.b"}, "p.b": {"p.a", "p.c"}, "p.c": set()}
    assert _cycles(graph) == [["p.a", "p.b", "p.a"]]
    source = "def f():\n    import importlib\n    return importlib.import_module('assay.errors')\n"
    names = _imported_names(ast.parse(source), "assay", _files())
    assert ("assay.errors", 3) in names


def test_a_split_package_only_documents_its_modules():
    """Its ``__init__`` imports nothing: importing ``run.log`` must not load ``run.preflight`` (and the config with it)."""
    for name in SPLIT:
        tree = ast.parse((ROOT / name / "__init__.py").read_text())
        assert [type(n).__name__ for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))] == []
    edges = imports()
    assert ("data", "run.log") in edges and ("run.resume", "run.dirs") in edges and ("run.preflight", "config") in edges
