#!/usr/bin/env python
"""Start-up time of the essencekit commands that make no tensor, each in a fresh process.

    python benchmarks/startup.py [--runs 7] [--json out.json]

Every command runs ``--runs`` times as ``python -m essencekit ...`` (the console script adds
nothing measurable); the table gives the median, the fastest and the slowest wall time, and
whether the command imported torch (one more run under ``python -X importtime``). Two
baselines frame them: an empty interpreter and ``import torch`` alone. It imports nothing from
essencekit itself, so ``PYTHONPATH=/other/checkout:/other/checkout/plugins`` times another tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _commands(essence: Path | None) -> list[tuple[str, list[str]]]:
    ek = [sys.executable, "-m", "essencekit"]
    commands = [
        ("python (empty interpreter)", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("essencekit --help", [*ek, "--help"]),
        ("essencekit --version", [*ek, "--version"]),
        ("essencekit plugins", [*ek, "plugins"]),
        ("essencekit plugins --json", [*ek, "plugins", "--json"]),
        ("essencekit pull-weights --list", [*ek, "pull-weights", "--list"]),
        ("essencekit info --help", [*ek, "info", "--help"]),
        ("essencekit transfer --help", [*ek, "transfer", "--help"]),
        ("completion: essencekit pull-weights --li<TAB>", [*ek]),
    ]
    if essence is not None:
        commands.append((f"essencekit info {essence.name}", [*ek, "info", str(essence)]))
    return commands


def _environment(label: str) -> dict:
    env = dict(os.environ)
    if label.startswith("completion"):
        env.update(_ESSENCEKIT_COMPLETE="complete_bash", COMP_WORDS="essencekit pull-weights --li", COMP_CWORD="2")
    return env


def _imports_torch(label: str, command: list[str]) -> bool:
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True,
                            env=_environment(label), timeout=600)
    # lines read "import time: self [us] | cumulative | <indent>module"
    return any(line.split("|")[-1].strip() == "torch" for line in result.stderr.splitlines())


def _time(label: str, command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment(label),
                       timeout=600, check=False)
        times.append(time.perf_counter() - start)
    return times


def _essence_file(folder: Path) -> Path | None:
    """A TargetCLIP-format essence (zeros) for ``info``; skipped without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return None
    path = folder / "essence.npy"
    np.save(path, np.zeros((1, 18, 512), dtype=np.float32))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, command in _commands(_essence_file(Path(folder))):
            times = _time(label, command, args.runs)
            rows.append({
                "command": label, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                "runs": args.runs, "imports_torch": _imports_torch(label, command),
            })
            row = rows[-1]
            print(f"{label:<48} {row['median_s']:6.2f} s  (min {row['min_s']:.2f}, max {row['max_s']:.2f})"
                  f"  torch: {'yes' if row['imports_torch'] else 'no'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
