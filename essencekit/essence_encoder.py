"""The essence encoder: TargetCLIP's second variant, an e4e encoder fine-tuned so that its raw
output for a target image *is* that target's essence direction.

``essencekit train-encoder`` makes these checkpoints; ``extract --method encoder`` and
:func:`essencekit.load_encoder` read them. A checkpoint is a plain dictionary that
``torch.load(weights_only=True)`` reads (no code, no pickled objects)::

    {"format": "essencekit.essence-encoder", "format_version": 1,
     "state_dict": {"encoder.<e4e key>": tensor, ...},   # e4e's own key names and shapes
     "metadata": {str: str, ...},                        # how it was trained (JSON values)
     "training": {...}}                                  # only in resumable checkpoints (last.pt)

The encoder keeps e4e's architecture and key names, so its shape is inferred from the weights
exactly as for an official e4e checkpoint. ``training`` holds the optimiser state, the step and
the best validation loss: what ``--resume`` needs and extraction does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .checkpoints import load_checkpoint, require_mapping
from .errors import EssencekitError

FORMAT = "essencekit.essence-encoder"
FORMAT_VERSION = 1
#: The strength an encoder's essences are applied with unless its metadata says otherwise: the
#: coefficient the training loss used for every source (docs/encoder.md says why not the 1.2
#: the authors' notebook used for new photos).
DEFAULT_STRENGTH = 1.0
_WHAT = "essence encoder checkpoint"
_FIX = "train one with `essencekit train-encoder` (its run folder holds best.pt and last.pt)"


class EssenceEncoder(nn.Module):
    """A trained essence encoder: ``forward(images)`` maps targets [B, 3, S, S] in [-1, 1]
    (FFHQ-aligned, ``S = input_size``) to essence directions [B, n_latent, style_dim].

    ``encoder`` is an :class:`~essencekit.models.e4e.Encoder4Editing`; its raw output, without
    e4e's ``latent_avg``, is the direction. ``metadata`` says how it was trained.
    """

    def __init__(self, encoder: nn.Module, metadata: Mapping[str, str] | None = None):
        super().__init__()
        self.encoder = encoder
        self.metadata = dict(metadata or {})

    @property
    def input_size(self) -> int:
        return self.encoder.config.input_size

    @property
    def n_latent(self) -> int:
        return self.encoder.n_latent

    @property
    def style_dim(self) -> int:
        return self.encoder.style_dim

    @property
    def recommended_strength(self) -> float:
        try:
            return float(self.metadata.get("recommended_strength", DEFAULT_STRENGTH))
        except ValueError:
            return DEFAULT_STRENGTH

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def for_inference(self) -> EssenceEncoder:
        """A copy for extraction only: e4e's BatchNorms folded into its convolutions (the same
        directions with less work, :mod:`essencekit.models.e4e_inference`); this one is not
        changed, and training it does not change the copy."""
        from .models.e4e import Encoder4Editing
        from .models.e4e_inference import FoldedEncoder

        if type(self.encoder) is not Encoder4Editing:
            return self
        with torch.no_grad():
            folded = FoldedEncoder(self.encoder)
        model = EssenceEncoder(folded, self.metadata)
        model.training = False  # not eval(): the unfolded modules it shares keep their own mode
        return model

    @torch.no_grad()
    def directions(self, images: torch.Tensor) -> torch.Tensor:
        """Essence directions of ``images`` without autograd history, in eval mode (BatchNorm
        on its running statistics), whatever mode the module was in."""
        was_training = self.training
        self.eval()
        try:
            return self(images.to(device=_device_of(self), dtype=torch.float32))
        finally:
            self.train(was_training)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def encoder_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights under e4e's key names (``encoder.``-prefixed), on the CPU."""
    module = getattr(encoder, "module", encoder)  # DistributedDataParallel wraps the module
    module = getattr(module, "encoder", module)
    return {f"encoder.{k}": v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def save_encoder_checkpoint(
    path: str | os.PathLike, encoder: nn.Module, metadata: Mapping[str, str], training: dict | None = None
) -> Path:
    """Write a checkpoint atomically (a crash or Ctrl-C never leaves half a file)."""
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"encoder metadata must map strings to strings; offending keys: {bad[:5]}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": encoder_state(encoder),
        # plain str copies: a str subclass (torch.__version__) would pickle as an object that
        # weights_only loading refuses
        "metadata": {str.__str__(k): str.__str__(v) for k, v in metadata.items()},
    }
    if training is not None:
        payload["training"] = training
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def is_essence_encoder_checkpoint(checkpoint) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def read_encoder_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dictionary at ``path``, checked to be an essence encoder's; one-line
    :class:`EssencekitError` otherwise (an official e4e checkpoint is named as such)."""
    return check_encoder_checkpoint(load_checkpoint(path, what=_WHAT), path)


def check_encoder_checkpoint(loaded, path: str | os.PathLike) -> dict:
    """:func:`read_encoder_checkpoint` for a checkpoint already read from ``path``."""
    checkpoint = require_mapping(loaded, path, _WHAT)
    if not is_essence_encoder_checkpoint(checkpoint):
        if "state_dict" in checkpoint and "opts" in checkpoint:
            raise EssencekitError(
                f"{path} is an e4e inversion checkpoint, not a trained essence encoder; {_FIX}"
            )
        hint = " (it is a StyleGAN2 generator)" if "g_ema" in checkpoint else ""
        raise EssencekitError(f"{path} is not an {_WHAT}{hint}; {_FIX}")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EssencekitError(
            f"{path} is an essence encoder of format version {version!r}, newer than this essencekit reads "
            f"({FORMAT_VERSION}); upgrade essencekit"
        )
    for key, kind in (("state_dict", dict), ("metadata", dict)):
        if not isinstance(checkpoint.get(key), kind):
            raise EssencekitError(f"{path}: the {_WHAT} has no '{key}' dictionary (a damaged file?); {_FIX}")
    return checkpoint


def encoder_from_checkpoint(checkpoint: dict, source: str) -> EssenceEncoder:
    """Build the :class:`EssenceEncoder` of a checkpoint dictionary (eval mode, on the CPU)."""
    from .models.e4e import Encoder4Editing

    state = {k[len("encoder."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    if not state:
        raise EssencekitError(f"{source}: the {_WHAT} holds no 'encoder.*' weights; {_FIX}")
    encoder = Encoder4Editing.from_state_dict(state, source=source)
    return EssenceEncoder(encoder, checkpoint["metadata"]).eval()


def load_essence_encoder(path: str | os.PathLike) -> EssenceEncoder:
    """Load a trained essence encoder (``best.pt``/``last.pt`` of a ``train-encoder`` run)."""
    return encoder_from_checkpoint(read_encoder_checkpoint(path), str(path))
