"""``python -m essencekit`` runs the command line."""

from .cli import main

main()
