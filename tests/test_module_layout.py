"""The command packages stand side by side: extraction, transfers, evaluation and training import what
they share from the shared layer (the top of ``essencekit``), never from each other, except
evaluation's use of the public transfer pipeline (its job: it measures what transfer makes).
The shared layer (``essencekit/*.py`` and ``essencekit/models``) imports no command package."""

from __future__ import annotations

import ast
from pathlib import Path

import essencekit

PACKAGE = Path(essencekit.__file__).parent
COMMANDS = ("extraction", "transfers", "evaluation", "training")
ALLOWED = {("evaluation", "transfers", ("Transferrer",))}


def _sibling_imports(command: str):
    for module in sorted((PACKAGE / command).glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = node.module.split(".")[0]
                if target in COMMANDS and target != command:
                    names = tuple(alias.name for alias in node.names)
                    yield module.name, node.lineno, target, node.module, names


ABOVE_SHARED = COMMANDS + ("bench", "cli")
# ``python -m essencekit`` starts the command line: the entry point sits above everything
ENTRY_POINTS = {"__main__.py"}


def _imported_modules(module: Path, package: tuple[str, ...]):
    """``(line, dotted name)`` of every module ``module`` imports, relative imports resolved
    against ``package`` (its package's dotted parts); ``from X import name`` yields ``X.name``
    too, as ``name`` may be a submodule (``from . import transfers``)."""
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            origin = ".".join(base + (node.module.split(".") if node.module else []))
            yield node.lineno, origin
            for alias in node.names:
                yield node.lineno, f"{origin}.{alias.name}"


def test_the_shared_layer_imports_no_command_package():
    layers = [(PACKAGE, ("essencekit",)), (PACKAGE / "models", ("essencekit", "models"))]
    found = [
        f"{module.relative_to(PACKAGE)}:{line} imports {name}"
        for folder, package in layers
        for module in sorted(folder.glob("*.py"))
        if module.name not in ENTRY_POINTS or folder != PACKAGE
        for line, name in _imported_modules(module, package)
        if name.split(".")[0] == "essencekit" and name.split(".")[1:2] in ([c] for c in ABOVE_SHARED)
    ]
    assert found == []


def test_the_layout_check_sees_absolute_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import essencekit.cli\nfrom essencekit.bench import suite\nfrom . import transfers\n"
                      "def f():\n    from ..extraction.api import extract\n", encoding="utf-8")
    names = [name for _, name in _imported_modules(module, ("essencekit", "models"))]
    assert {"essencekit.cli", "essencekit.bench", "essencekit.models.transfers", "essencekit.extraction.api"} <= set(names)
    names = [name for _, name in _imported_modules(module, ("essencekit",))]
    assert "essencekit.transfers" in names


def test_command_packages_import_only_the_shared_layer():
    found = [
        f"{command}/{name}:{line} imports {names} from {module}"
        for command in COMMANDS
        for name, line, target, module, names in _sibling_imports(command)
        if (command, target, names) not in ALLOWED or module != target
    ]
    assert found == []
