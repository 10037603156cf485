"""The layout docs/architecture.md describes is the layout of the code.

- Every module of the package is in the document's module table, and every module in the table exists.
- Data flows one way: no module imports (at run time, at any depth of a function) a module that the table lists
  after it. ``if TYPE_CHECKING:`` imports are annotations, not data flow, and are not counted here.
- No import cycle of any kind: counting ``if TYPE_CHECKING:`` imports too, no module reaches itself.
- No module is over ~800 lines (the style guide's bound for one job).
- ``import awq_autoselect`` stays cheap (checked in tests/test_package.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "awq_autoselect"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _documented_order() -> list[str]:
    """Module names in the order of docs/architecture.md's module table (rows ``| `awq_autoselect.x` | ...``)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Modules, in the order data flows", 1)[1]
    return re.findall(r"^\|\s*`(awq_autoselect(?:\.[\w.]+)?)`\s*\|", table, flags=re.MULTILINE)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str, *, annotations: bool = False) -> set[str]:
    """Modules of the package that ``module`` imports at run time (anywhere, inside functions too), and with
    ``annotations`` also those it imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if not annotations and isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("awq_autoselect"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("awq_autoselect"):
                modules = _modules()
                for alias in node.names:  # `from pkg import module` imports the module; else the names are pkg's
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        for inner in ast.iter_child_nodes(node):
            visit(inner)

    visit(tree)
    return found


def _owner(name: str, order: list[str]) -> str | None:
    """The documented module ``name`` belongs to: itself, or the longest documented prefix (a package)."""
    while name:
        if name in order:
            return name
        name = name.rpartition(".")[0]
    return None


def test_the_document_lists_every_module_once_and_nothing_else() -> None:
    order = _documented_order()
    assert len(order) == len(set(order)), "a module is listed twice"
    assert sorted(order) == sorted(_modules()), "docs/architecture.md's module table and the package differ"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_one_after_it(module: str) -> None:
    order = _documented_order()
    rank = {name: i for i, name in enumerate(order)}
    path = _modules()[module]
    upward = []
    for imported in sorted(_imports(path, module)):
        owner = _owner(imported, order)
        if owner is None or owner == module:
            continue
        if owner.startswith(module + "."):
            continue  # a package's __init__ re-exports its own modules
        if rank[owner] > rank[module]:
            upward.append(owner)
    assert not upward, f"{module} imports {', '.join(sorted(set(upward)))}, listed after it in docs/architecture.md"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_is_over_800_lines(module: str) -> None:
    lines = _modules()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines: over ~{MAX_LINES} a module holds two jobs"


def _import_graph() -> dict[str, set[str]]:
    """Every module to the modules of the package it imports, annotation imports included. ``from pkg import x``
    is an edge to ``pkg.x`` when that is a module, else to ``pkg`` (its ``__init__``); the parent packages Python
    imports on the way are not edges (every module would reach ``awq_autoselect/__init__.py``)."""
    modules = _modules()
    return {
        module: {name for name in _imports(path, module, annotations=True) if name in modules and name != module}
        for module, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle, as a path ``[a, b, ..., a]``, for each group of modules that reach one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first: the shortest way back to start inside the group
            node = queue.pop(0)
            if start in graph[node]:
                cycles.append([*paths[node], start])
                break
            for target in sorted(graph[node] & group):
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    queue.append(target)
    return cycles


def test_no_import_cycle_annotation_imports_included() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (TYPE_CHECKING imports included):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_sees_imports_inside_functions_and_type_checking_blocks_only_when_asked(tmp_path: Path) -> None:
    sample = PACKAGE / "loading" / "load.py"
    imports = _imports(sample, "awq_autoselect.loading.load")
    assert "awq_autoselect.selection" in imports  # imported inside load_quantized_auto
    module = tmp_path / "sample.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .errors import InputError\n"
        "if TYPE_CHECKING:\n"
        "    from .hub import HubOrigin\n"
        "def f() -> None:\n"
        "    from awq_autoselect.trials import runner\n",
        encoding="utf-8",
    )
    runtime = {"awq_autoselect.errors", "awq_autoselect.trials.runner"}
    assert _imports(module, "awq_autoselect.sample") == runtime
    assert _imports(module, "awq_autoselect.sample", annotations=True) == {*runtime, "awq_autoselect.hub"}


def test_errors_imports_nothing_of_the_package() -> None:
    assert _imports(PACKAGE / "errors.py", "awq_autoselect.errors", annotations=True) == set()
