"""Where the command line writes: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import json
import sys

from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_json(data) -> None:
    """Write ``data`` as indented JSON to stdout, unstyled so scripts can parse it."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only for a person watching: not with --quiet, not when stderr is piped."""
    return not quiet and err.is_terminal
