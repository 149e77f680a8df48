"""The package layout of DESIGN.md (section Layout), checked on the source with ``ast``.

Every ``.py`` file under ``aekit/`` is parsed (nothing is imported).  An import counts wherever it is
written -- at module level or inside a function, relative or absolute -- except in the body of
``if TYPE_CHECKING:``, which never runs.  ``from P import x`` counts as importing the module ``P.x``
when that file exists, else as importing ``P``.  Importing ``a.b.c`` does not count as importing the
packages ``a`` and ``a.b`` (Python runs their ``__init__`` first, but every module would then depend
on ``aekit/__init__.py``).

Old module paths (``aekit/network.py`` ...) are alias files whose body does
``sys.modules[__name__] = <new module>``.  They exist for users only: nothing inside aekit imports
them.  For the dependency rules an import of an alias counts as an import of the module it names.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aekit"

MAX_LINES = 600

# The import order of DESIGN.md: a module may import modules of its own layer or of a lower one
# (a smaller number), never of a higher one.  A module belongs to the longest prefix listed.
LAYERS: dict[str, int] = {
    # layer 0: the foundations
    "aekit.errors": 0,
    "aekit.registry": 0,
    # layer 1: data in, files out
    "aekit.data": 1,
    "aekit.io": 1,
    # layer 2: the model (specs, activations, layers)
    "aekit.model": 2,
    # layer 3: what is minimised (losses, penalties, metrics)
    "aekit.objective": 3,
    # layer 4: the training loop, optimizers, checkpoints, distributed
    "aekit.train": 4,
    # layer 5: the facade
    "aekit.autoencoder": 5,
    "aekit.quantized": 5,
    "aekit.variational": 5,  # the facade's variational-autoencoder methods (a mixin)
    # layer 6: looking inside a built model
    "aekit.inspect": 6,
    # layer 7: the front ends
    "aekit.estimator": 7,
    "aekit.cli": 7,
}
LAYER_NAMES = {
    0: "errors/registry",
    1: "data/io",
    2: "model",
    3: "objective",
    4: "train",
    5: "autoencoder",
    6: "inspect",
    7: "estimator/cli",
}
# Outside the order: the package's public surface, the entry point and the version string.
EXEMPT = {"aekit", "aekit.__main__", "aekit._version"}

# "X never imports Y" (DESIGN.md, below the layout), each checked by its own test.
FORBIDDEN = {
    "train": ("aekit.train", "aekit.autoencoder", "train never imports the facade"),
    "io": ("aekit.io", "aekit.model", "io never imports model (a model file holds no model classes)"),
    "model": ("aekit.model", "aekit.objective", "model never imports objective (layers report terms)"),
}


# ---------------------------------------------------------------------- scanning
@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name of an aekit module
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), filename=str(path)) for name, path in modules().items()}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(node: ast.AST):
    """Every Import/ImportFrom under ``node``, at any depth, except under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child.test):
            for other in child.orelse:
                yield from import_nodes_in(other)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from import_nodes(child)


def import_nodes_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from import_nodes(node)


def known_prefix(name: str, known) -> str | None:
    """The longest prefix of dotted ``name`` that is a module in ``known``."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def resolve(importer: str, is_package: bool, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """The aekit modules that ``node``, written in module ``importer``, imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names if alias.name == "aekit" or alias.name.startswith("aekit.")]
        return [m for m in (known_prefix(n, known) for n in names) if m]
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base != "aekit" and not base.startswith("aekit."):
        return []
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        target = full if full in known else known_prefix(base, known)
        if target:
            out.append(target)
    return out


def scan(name: str, tree: ast.Module, path: Path, known) -> list[Import]:
    is_package = path.name == "__init__.py"
    found = []
    for node in import_nodes(tree):
        for target in resolve(name, is_package, node, known):
            if target != name:  # ``from . import x`` of a name defined in this package's own __init__
                found.append(Import(name, target, path, node.lineno))
    return found


@cache
def imports() -> tuple[Import, ...]:
    known = modules()
    # One entry per (importer, target, line): ``from .x import a, b`` is one import of x.
    return tuple(dict.fromkeys(i for name, tree in trees().items() for i in scan(name, tree, known[name], known)))


def is_alias_module(tree: ast.Module) -> bool:
    """True for a file whose body does ``sys.modules[__name__] = ...``, or an old path that
    re-exports names from their new homes (its docstring says it is "kept importable")."""
    if "kept importable" in " ".join((ast.get_docstring(tree) or "").split()):
        return True
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Attribute)
                    and target.value.attr == "modules"
                    and isinstance(target.slice, ast.Name)
                    and target.slice.id == "__name__"
                ):
                    return True
    return False


@cache
def aliases() -> dict[str, set[str]]:
    """Old-path alias module -> the module(s) it stands for."""
    names = {n for n, t in trees().items() if n.count(".") == 1 and is_alias_module(t)}
    return {n: {i.target for i in imports() if i.importer == n} for n in names}


def real_targets(target: str) -> set[str]:
    """``target``, or what an alias module stands for (following chains of aliases)."""
    seen, todo, out = set(), [target], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in aliases():
            todo.extend(aliases()[name])
        else:
            out.add(name)
    return out


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(name: str) -> int | None:
    prefix = known_prefix(name, LAYERS)
    return None if prefix is None else LAYERS[prefix]


def failure(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------- the scanner itself
def test_the_scanner_sees_relative_absolute_and_function_level_imports_but_not_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import step, nothing_here\n"
        "from ..model import specs\n"
        "import aekit.data.sources as src\n"
        "def f():\n"
        "    from ..autoencoder import Autoencoder\n"
        "if TYPE_CHECKING:\n"
        "    from ..inspect import features\n"
        "else:\n"
        "    from aekit import errors\n"
    )
    known = modules()
    found = scan("aekit.train.loop", ast.parse(source), PACKAGE / "train" / "loop.py", known)
    assert [(i.target, i.line) for i in found] == [
        ("aekit.train.step", 2),
        ("aekit.train", 2),
        ("aekit.model.specs", 3),
        ("aekit.data.sources", 4),
        ("aekit.autoencoder", 6),
        ("aekit.errors", 10),
    ]
    assert "aekit.network" in aliases() and real_targets("aekit.network") == {"aekit.autoencoder"}
    assert len(modules()) > 40 and len(imports()) > 100


# ---------------------------------------------------------------------- the rules
def test_no_import_cycles():
    graph: dict[str, dict[str, list[Import]]] = {name: {} for name in modules()}
    for i in imports():
        graph[i.importer].setdefault(i.target, []).append(i)

    # Tarjan's strongly connected components; every component of two or more modules holds a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    def shortest_cycle(start: str, members: set[str]) -> list[str]:
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
        raise AssertionError("unreachable: a component always holds a cycle")

    report = []
    for component in components:
        members = set(component)
        # The shortest cycle through each module of the component, each cycle once.
        cycles: dict[frozenset, list[str]] = {}
        for start in component:
            cycle = shortest_cycle(start, members)
            cycles.setdefault(frozenset(zip(cycle, cycle[1:])), cycle)
        paths = []
        for cycle in cycles.values():
            hops = ", ".join(f"{graph[a][b][0].where}" for a, b in zip(cycle, cycle[1:]))
            paths.append(" -> ".join(cycle) + f"  [{hops}]")
        edges = sorted(
            (i for a in component for b in graph[a] if b in members for i in graph[a][b]),
            key=lambda i: (str(i.path), i.line),
        )
        report.append(
            f"{len(component)} modules import each other: {', '.join(component)}\n    cycles:\n      "
            + "\n      ".join(paths)
            + "\n    every import inside them:\n      "
            + "\n      ".join(map(str, edges))
        )
    assert not report, failure("import cycles among aekit modules", report)


def test_old_path_alias_modules_are_imported_by_nothing_inside_aekit():
    assert aliases(), "no alias modules found: has the sys.modules[__name__] = ... idiom changed?"
    offenders = [
        f"{i} (an old-path alias of {', '.join(sorted(aliases()[i.target]))}; import that instead)"
        for i in imports()
        # The package's __init__ is the public surface: it may bind a public old path (aekit.visualize).
        if i.target in aliases() and i.importer != "aekit"
    ]
    assert not offenders, failure("aekit modules importing old-path alias modules", offenders)


def test_no_module_over_600_lines():
    offenders = []
    for path in modules().values():
        count = len(path.read_text().splitlines())
        if count > MAX_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {count} lines, {count - MAX_LINES} over")
    assert not offenders, failure(f"modules over {MAX_LINES} lines", offenders)


def forbidden_imports(rule: str) -> list[str]:
    importer, target, _ = FORBIDDEN[rule]
    return [
        f"{i}" + (f" (an alias of {', '.join(sorted(real_targets(i.target)))})" if i.target in aliases() else "")
        for i in imports()
        if inside(i.importer, importer) and any(inside(t, target) for t in real_targets(i.target))
    ]


def test_train_never_imports_the_facade():
    offenders = forbidden_imports("train")
    assert not offenders, failure(FORBIDDEN["train"][2], offenders)


def test_io_never_imports_model():
    offenders = forbidden_imports("io")
    assert not offenders, failure(FORBIDDEN["io"][2], offenders)


def test_model_never_imports_objective():
    offenders = forbidden_imports("model")
    assert not offenders, failure(FORBIDDEN["model"][2], offenders)


def test_layer_order():
    order = " <- ".join(LAYER_NAMES[n] for n in sorted(LAYER_NAMES))
    unplaced = [
        f"{path.relative_to(ROOT)}: module {name} is in no layer of the table in this test"
        for name, path in modules().items()
        if name not in EXEMPT and name not in aliases() and layer_of(name) is None
    ]
    offenders = []
    for i in imports():
        if i.importer in EXEMPT or i.importer in aliases() or layer_of(i.importer) is None:
            continue
        low = layer_of(i.importer)
        for target in sorted(real_targets(i.target)):
            high = layer_of(target)
            if target not in EXEMPT and high is not None and high > low:
                via = f" (through the alias {i.target})" if i.target != target else ""
                offenders.append(
                    f"{i.where}: {i.importer} [{LAYER_NAMES[low]}] imports {target} [{LAYER_NAMES[high]}]{via}"
                )
    assert not unplaced + offenders, failure(f"imports against the layer order {order}", unplaced + offenders)
