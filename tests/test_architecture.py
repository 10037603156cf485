"""The layout docs/architecture.md describes is the layout of the code.

- Every module of the package is in the document's module table, and every module in the table exists.
- Data flows one way: no module imports (at run time, at any depth of a function) a module that the table lists
  after it. ``if TYPE_CHECKING:`` imports are annotations, not data flow, and are not counted.
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


def _runtime_imports(path: Path, module: str) -> set[str]:
    """Modules of the package that ``module`` imports at run time (anywhere but under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
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
    for imported in sorted(_runtime_imports(path, module)):
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


def test_the_checker_sees_imports_inside_functions_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    sample = PACKAGE / "loading" / "load.py"
    imports = _runtime_imports(sample, "awq_autoselect.loading.load")
    assert "awq_autoselect.selection" in imports  # imported inside load_quantized_auto
    errors = _runtime_imports(PACKAGE / "errors.py", "awq_autoselect.errors")
    assert not any(name.startswith("awq_autoselect.loading") for name in errors)  # only under TYPE_CHECKING
