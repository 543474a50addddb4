"""Essence extraction by optimisation (TargetCLIP's first variant).

``essencekit.extract(target, ...)`` (:func:`essencekit.extract.api.extract`) returns an
:class:`~essencekit.essence.Essence`. The pieces, one job each: :mod:`.losses` (transfer and
consistency), :mod:`.schedule` (the learning-rate schedule), :mod:`.coefficients` (the
per-source coefficient rules), :mod:`.optimise` (the batched loop), :mod:`.sources` (source
latents and random starts), :mod:`.inversion` (e4e starts and photo sources),
:mod:`.memory` (chunk sizes), :mod:`.preview` (the contact sheet), :mod:`.api` (the run and
its metadata).
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    # Importing this package binds the name ``essencekit.extract`` to it, which would hide the
    # function ``essencekit.extract`` exported lazily from the top-level package; so the
    # package itself calls through to the function.
    def __call__(self, *args, **kwargs):
        from .api import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name):
    if name in ("extract", "Extractor", "ExtractionInterrupted", "ExtractSettings"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
