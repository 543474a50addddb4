"""Essence extraction by optimisation (TargetCLIP's first variant).

``essencekit.extract(target, ...)`` (:func:`essencekit.extraction.api.extract`) returns an
:class:`~essencekit.essence.Essence`. The pieces, one job each: :mod:`.schedule` (the learning-rate schedule), :mod:`.coefficients` (the
per-source coefficient rules), :mod:`.optimise` (the batched loop), :mod:`.settings` (the
hyper-parameters, declared and checked once), :mod:`.sources` (source latents and random
starts), :mod:`.inversion` (e4e starts and photo sources), :mod:`.memory` (chunk sizes),
:mod:`.preview` (the contact sheet), :mod:`.api` (the run and its metadata). The losses,
latent files, targets and weights come from the shared layer (:mod:`essencekit.clip_losses`,
:mod:`essencekit.latents`,
:mod:`essencekit.images`, :mod:`essencekit.weights`).
"""

from __future__ import annotations


def __getattr__(name):
    if name in ("extract", "Extractor", "ExtractionInterrupted", "ExtractSettings"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
