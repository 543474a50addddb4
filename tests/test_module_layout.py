"""The command packages stand side by side: extraction, transfers and evaluation import what
they share from the shared layer (the top of ``essencekit``), never from each other, except
evaluation's use of the public transfer pipeline (its job: it measures what transfer makes)."""

from __future__ import annotations

import ast
from pathlib import Path

import essencekit

PACKAGE = Path(essencekit.__file__).parent
COMMANDS = ("extraction", "transfers", "evaluation")
ALLOWED = {("evaluation", "transfers", ("Transferrer",))}


def _sibling_imports(command: str):
    for module in sorted((PACKAGE / command).glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = node.module.split(".")[0]
                if target in COMMANDS and target != command:
                    names = tuple(alias.name for alias in node.names)
                    yield module.name, node.lineno, target, node.module, names


def test_command_packages_import_only_the_shared_layer():
    found = [
        f"{command}/{name}:{line} imports {names} from {module}"
        for command in COMMANDS
        for name, line, target, module, names in _sibling_imports(command)
        if (command, target, names) not in ALLOWED or module != target
    ]
    assert found == []
