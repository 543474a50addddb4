"""The plugin hooks essencekit calls: the stable API for plugin authors.

Each registry hook receives a ``register`` callback; call it once per object you provide.
Implement a hook with ``@essencekit.hookimpl`` on a function of the same name in a module
that your package exposes through the ``essencekit`` entry-point group. docs/plugins.md
documents every hook with a runnable example.
"""

import pluggy

hookspec = pluggy.HookspecMarker("essencekit")
hookimpl = pluggy.HookimplMarker("essencekit")


@hookspec
def register_backends(register):
    """Register compute backends: call ``register(backend)`` with an ``essencekit.Backend``."""


@hookspec
def register_clip_models(register):
    """Register CLIP variants: call ``register(variant)`` with an ``essencekit.ClipVariant``."""


@hookspec
def register_weights(register):
    """Register downloadable artifacts: call ``register(artifact)`` with an ``essencekit.WeightArtifact``."""


@hookspec
def register_aligners(register):
    """Register face aligners: call ``register(aligner)`` with an ``essencekit.Aligner``."""


@hookspec
def register_commands(app):
    """Add subcommands to the ``essencekit`` command line: ``app`` is its ``typer.Typer``."""
