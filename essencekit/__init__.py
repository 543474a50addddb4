"""essencekit: image-based CLIP-guided essence transfer (TargetCLIP) on StyleGAN2.

The public API: :func:`extract` (an essence by optimisation), :func:`train_encoder` and
:func:`extract_with_encoder` (the encoder variant: an essence in one forward pass), :func:`transfer`,
:func:`evaluate` (the paper's measures), :func:`load_essence`,
:func:`load_generator`, :func:`load_encoder`, :func:`load_clip`,
:func:`load_identity_model`, the
objects plugins register (:class:`Backend`, :class:`ClipVariant`, :class:`WeightArtifact`,
:class:`Aligner`) and the :data:`hookimpl` marker for plugin authors.
"""

# First, before anything imports torch: torch reads this at its first allocation.
from .hugepages import request_huge_pages

request_huge_pages()

# None of these import torch: `essencekit --help` and `essencekit plugins` never need it
# (benchmarks/startup.py; tests/test_startup.py keeps it so)
from .aligners import Aligner, FaceLandmarks
from .backends import Backend, select_backend
from .clip_variant import ClipVariant
from .errors import EssencekitError
from .hookspecs import hookimpl
from .version import __version__
from .weights import WeightArtifact

__all__ = [
    "Aligner",
    "Backend",
    "ClipVariant",
    "EssencekitError",
    "FaceLandmarks",
    "WeightArtifact",
    "__version__",
    "extract",
    "extract_with_encoder",
    "hookimpl",
    "invert",
    "transfer",
    "evaluate",
    "load_clip",
    "load_encoder",
    "load_essence",
    "load_generator",
    "load_identity_model",
    "select_backend",
    "train_encoder",
]

_LAZY = {
    "extract": ("essencekit.extraction.api", "extract"),
    "extract_with_encoder": ("essencekit.extraction.encoder_method", "extract_with_encoder"),
    "train_encoder": ("essencekit.training.api", "train_encoder"),
    "load_essence": ("essencekit.essence", "load_essence"),
    "load_clip": ("essencekit.api", "load_clip"),
    "load_encoder": ("essencekit.api", "load_encoder"),
    "load_generator": ("essencekit.api", "load_generator"),
    "load_identity_model": ("essencekit.api", "load_identity_model"),
    "transfer": ("essencekit.transfers.api", "transfer"),
    "evaluate": ("essencekit.evaluation.api", "evaluate"),
    "invert": ("essencekit.transfers.api", "invert"),
}


def __getattr__(name):
    # torch, open_clip and the model code load only when used, so `essencekit --help` stays quick
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'essencekit' has no attribute {name!r}")
