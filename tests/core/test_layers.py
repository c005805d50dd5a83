"""Layers point down: core imports only core; tasks never reach up to flows, the worker, the bridge,
the CLI or the composition root; flows never reach the worker, the bridge or the CLI.

Every import counts, also one inside a function or under `TYPE_CHECKING`, and so does an
`importlib.import_module("stripeflow....")` with a literal name: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import stripeflow

PACKAGE = Path(stripeflow.__file__).parent

# layer -> the layers (stripeflow.<name>) it may never import
FORBIDDEN = {
    "tasks": {"flows", "deployments", "bridge", "cli", "runtime"},
    "flows": {"deployments", "bridge", "cli"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(path.read_text(), package, str(path))


def _imports_in(source: str, package: str, filename: str = "<probe>") -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from stripeflow import cli` imports stripeflow.cli: name each imported thing too
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base == "stripeflow" else base
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _layer(module: str) -> str | None:
    """`stripeflow.tasks.crm.common` -> `tasks`; None for anything outside the package."""
    parts = module.split(".")
    if parts[0] != "stripeflow":
        return None
    return parts[1] if len(parts) > 1 else ""


def _modules(layer: str) -> list[Path]:
    root = PACKAGE / layer
    return sorted([*root.rglob("*.py")] if root.is_dir() else [PACKAGE / f"{layer}.py"])


def _violations(layer: str, allowed: set[str] | None = None, forbidden: set[str] | None = None) -> list[str]:
    found = []
    for path in _modules(layer):
        for line, module in _imports(path):
            target = _layer(module)
            if target is None:
                continue
            if (allowed is not None and target not in allowed) or (forbidden and target in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_the_scan_sees_every_kind_of_import() -> None:
    """The checker itself: absolute, relative, from-package, lazy and importlib imports are all seen."""
    probe = (
        "import stripeflow.cli\n"
        "from stripeflow import runtime\n"
        "from ..tasks import inbox\n"
        "from . import money\n"
        "def f():\n"
        "    from stripeflow.flows import replay\n"
        "    import importlib\n"
        "    importlib.import_module('stripeflow.bridge.app')\n"
    )
    assert {m for _, m in _imports_in(probe, "stripeflow.core")} == {
        "stripeflow.cli",
        "stripeflow.runtime",
        "stripeflow.tasks",
        "stripeflow.core",
        "stripeflow.flows",
        "importlib",
        "stripeflow.bridge.app",
    }


def test_core_imports_only_core() -> None:
    assert _modules("core"), "no modules found under stripeflow/core"
    assert _violations("core", allowed={"core"}) == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_tasks_and_flows_never_import_the_layers_above_them(layer: str) -> None:
    assert _modules(layer), f"no modules found under stripeflow/{layer}"
    assert _violations(layer, forbidden=FORBIDDEN[layer]) == []
