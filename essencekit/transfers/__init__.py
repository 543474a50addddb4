"""Applying essences to real photos, in bulk (``essencekit transfer``), and inverting photos to
W+ latent files (``essencekit invert``).

``essencekit.transfer(inputs, essence, ...)`` (:func:`essencekit.transfers.api.transfer`) yields
one result per output or failure; :func:`essencekit.transfers.api.invert` does the same for W+
files. The pieces, one job each: :mod:`.inputs` (files, folders, globs), :mod:`.latents` (W+
latent files), :mod:`.latent_cache` (the W+ cache), :mod:`.essences` (``NAME_OR_PATH[@WEIGHT]``
and their sum), :mod:`.layers` (``--layers``), :mod:`.naming` (output names),
:mod:`.writing` (image files with metadata), :mod:`.grid` (contact sheets),
:mod:`.concurrency` (bounded, ordered background work), :mod:`.pipeline` (the batched run) and
:mod:`.api` (models and the public functions). docs/transfer.md describes the command.
"""

from __future__ import annotations

_EXPORTS = ("transfer", "invert", "Transferrer", "TransferResult", "InversionResult")


def __getattr__(name):
    if name in _EXPORTS:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
