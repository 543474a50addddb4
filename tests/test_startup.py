"""Start-up: commands that make no tensor never import torch (a second or more of every run).

Each command runs in a fresh interpreter, as a user's shell would start it; the modules it
imported are read when it exits. benchmarks/startup.py times the same commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# runs `essencekit ARGS...` and, however it exits, writes the modules it imported to $REPORT
_PROBE = textwrap.dedent("""
    import json, os, sys
    from essencekit.cli import main
    try:
        main(sys.argv[1:])
    finally:
        with open(os.environ["REPORT"], "w") as handle:
            json.dump({"modules": sorted(sys.modules)}, handle)
""")


def _imported(tmp_path, *args: str, env: dict | None = None) -> dict:
    report = tmp_path / "report.json"
    environment = {**os.environ, "REPORT": str(report), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=environment, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    data["stdout"] = result.stdout
    return data


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["plugins"], ["plugins", "--json"], ["pull-weights", "--list"],
    ["pull-weights", "--list", "--json"], ["info", "--help"], ["transfer", "--help"], ["extract", "--help"],
    ["doctor", "--help"],
])
def test_commands_that_make_no_tensor_do_not_import_torch(tmp_path, args):
    modules = _imported(tmp_path, *args)["modules"]
    assert "torch" not in modules


def test_shell_completion_does_not_import_torch(tmp_path):
    data = _imported(tmp_path, env={
        "_ESSENCEKIT_COMPLETE": "complete_bash", "COMP_WORDS": "essencekit pull-weights --li", "COMP_CWORD": "2",
    })
    assert data["stdout"].split() == ["--list", "--link"]
    assert "torch" not in data["modules"]


def test_huge_pages_are_still_requested_before_torch_loads(tmp_path):
    # torch reads THP_MEM_ALLOC_ENABLE at its first allocation; importing essencekit sets it,
    # and now that torch loads later (with the first tensor), it must still be set by then
    script = textwrap.dedent("""
        import os, sys
        import essencekit
        assert "torch" not in sys.modules
        print(os.environ.get("THP_MEM_ALLOC_ENABLE"))
        essencekit.select_backend("cpu").device  # the first use of torch
        assert "torch" in sys.modules
    """)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
