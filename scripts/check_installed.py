"""Import every module of an installed (not editable) awq_autoselect and compare them with the source tree.

Run by scripts/check_wheel.sh from outside the checkout, with the wheel installed in a folder on PYTHONPATH, so
that nothing of the checkout can shadow it: a module missing from the wheel fails here, not at a user's import.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_installed.py SITE SOURCE_PACKAGE_DIR", file=sys.stderr)
        return 2
    site, source = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    import awq_autoselect

    where = Path(awq_autoselect.__file__).resolve()
    if site not in where.parents:
        print(f"awq_autoselect imported from {where}, not from the installed copy in {site}", file=sys.stderr)
        return 1
    installed_root = where.parent
    names = sorted(info.name for info in pkgutil.walk_packages(awq_autoselect.__path__, prefix="awq_autoselect."))
    expected = sorted(
        "awq_autoselect." + ".".join(p.relative_to(source).with_suffix("").parts).removesuffix(".__init__")
        for p in source.rglob("*.py")
        if p.name != "__init__.py" or p.parent != source
    )
    expected = [name.removesuffix(".__init__") for name in expected]
    missing = sorted(set(expected) - set(names))
    if missing:
        print(f"missing from the installed package: {', '.join(missing)}", file=sys.stderr)
        return 1
    if not (installed_root / "py.typed").is_file():
        print("py.typed is missing from the installed package", file=sys.stderr)
        return 1
    warnings.filterwarnings("ignore", message="(?s).*AutoAWQ is officially deprecated", category=DeprecationWarning)
    for name in names:
        if name == "awq_autoselect.__main__":
            continue  # it runs the CLI
        importlib.import_module(name)
    print(f"installed package OK: {len(names)} modules import from {installed_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
