"""Applying essences to real photos, in bulk (``essencekit transfer``), and inverting photos to
W+ latent files (``essencekit invert``).

``essencekit.transfer(inputs, essence, ...)`` (:func:`essencekit.transfers.api.transfer`) yields
one result per output or failure; :func:`essencekit.transfers.api.invert` does the same for W+
files. The pieces, one job each: :mod:`.layers` (``--layers``), :mod:`.naming` (output names),
:mod:`.writing` (image files with metadata), :mod:`.concurrency` (bounded, ordered background work), :mod:`.pipeline` (the batched run) and
:mod:`.api` (models and the public functions). What other commands share lives in the shared
layer: :mod:`essencekit.inputs` (files, folders, globs), :mod:`essencekit.latents` (W+ latent
files), :mod:`essencekit.latent_cache` (the W+ cache, which ``essencekit cache`` manages too),
:mod:`essencekit.essence_mix` (``NAME_OR_PATH[@WEIGHT]`` and their sum) and
:mod:`essencekit.images` (photos, contact sheets). docs/transfer.md describes the command.
"""

from __future__ import annotations

_EXPORTS = ("transfer", "invert", "Transferrer", "TransferResult", "InversionResult")


def __getattr__(name):
    if name in _EXPORTS:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
