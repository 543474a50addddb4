"""CLIP image encoders for essence transfer, built on open_clip from local weights.

A :class:`ClipVariant` is data: an open_clip model config, the weights artifact that fits it,
the normalisation and the input size. :func:`load_clip` builds the model with open_clip's
classes (never a hub download), loads the state dict strictly, keeps the image tower only
and wraps it in a frozen :class:`ClipEncoder`.

Input modes (see docs/clip.md):

* ``raw`` (default): pixels in [-1, 1] go straight into CLIP, as in the reference TargetCLIP
  code, so the published essences live in this domain.
* ``standard``: CLIP's own preprocessing, [0, 1] pixels normalised by the variant's mean/std.

Generated images reach 224 px through :func:`clip_resize`, an exact area resize that equals
the reference's "nearest x7, then average-pool by S/32" without building the 7x image.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

# the variant is plain data, in its own torch-free module (registering variants must not
# import torch); re-exported here, where plugins have always imported it from
from .clip_variant import OPENAI_MEAN, OPENAI_STD, ClipVariant, default_clip_name  # noqa: F401
from .errors import EssencekitError

INPUT_MODES = ("raw", "standard")

# keys OpenAI's archives carry as metadata tensors; they are not weights of any module
_OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


# ---------------------------------------------------------------------------------------
# the resize of generated images


@functools.lru_cache(maxsize=64)
def _area_matrix(src: int, dst: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # In units where a source pixel spans `dst` and an output pixel spans `src`, every
    # boundary is an integer: the overlaps, hence the weights, are exact.
    i = torch.arange(dst, dtype=torch.int64).unsqueeze(1)
    j = torch.arange(src, dtype=torch.int64).unsqueeze(0)
    low = torch.maximum(i * src, j * dst)
    high = torch.minimum((i + 1) * src, (j + 1) * dst)
    overlap = (high - low).clamp(min=0).to(torch.float64)
    return (overlap / src).to(device=device, dtype=dtype)


def area_resize_matrix(
    src: int, dst: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The ``[dst, src]`` matrix of an exact area-weighted 1-D resize (rows sum to 1).

    Row ``i`` averages the source interval ``[i*src/dst, (i+1)*src/dst)``, each source pixel
    weighted by its overlap. Cached per (src, dst, device, dtype): do not modify the result.
    """
    if src <= 0 or dst <= 0:
        raise ValueError(f"resize sizes must be positive, got {src} -> {dst}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _area_matrix(int(src), int(dst), device, dtype)


def clip_resize(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Resize ``[..., H, W]`` images to ``size`` x ``size`` by exact area averaging.

    For ``H`` and ``W`` multiples of 32 this equals the reference TargetCLIP resize (nearest
    upsampling by 7, then average pooling with kernel ``H/32``) to float rounding; it is two
    small matrix products (``M @ X @ M^T``), differentiable, with no 7x intermediate.
    """
    if images.dim() < 2:
        raise ValueError(f"clip_resize needs [..., H, W] images, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"clip_resize needs floating-point images, got {images.dtype}")
    height, width = images.shape[-2:]
    if height == size and width == size:
        return images
    rows = area_resize_matrix(height, size, device=images.device, dtype=images.dtype)
    cols = rows if width == height else area_resize_matrix(width, size, device=images.device, dtype=images.dtype)
    return rows @ images @ cols.transpose(0, 1)


# ---------------------------------------------------------------------------------------
# variants, state dicts, models


def get_variant(name: str | None = None) -> ClipVariant:
    """The registered CLIP variant ``name`` (exact, else ignoring case and '-' vs '/'); ``None``
    for the default (:func:`~essencekit.clip_variant.default_clip_name`)."""
    from .plugins import registered

    variants = registered("clip_models")
    if name is None:
        name = default_clip_name()
    if name in variants:
        return variants[name]

    def folded(text: str) -> str:
        return str(text).lower().replace("/", "-")

    matches = [v for key, v in variants.items() if folded(key) == folded(name)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(variants) or "none"
    raise EssencekitError(f"unknown CLIP model {name!r}; registered CLIP models: {known}")


def _is_torchscript_archive(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_clip_state_dict(path: str | os.PathLike, *, artifact: str = "") -> dict[str, torch.Tensor]:
    """Read a CLIP state dict in open_clip's layout from ``.safetensors`` or a plain
    ``.pt``/``.pth`` state dict, on the CPU. ``artifact`` names the pull-weights artifact in
    error messages."""
    path = Path(path)
    fix = f"`essencekit pull-weights {artifact}`" if artifact else "`essencekit pull-weights`"
    if not path.exists():
        raise EssencekitError(f"CLIP weights not found: {path} (download them with {fix})")
    if path.is_dir():
        raise EssencekitError(f"CLIP weights path is a folder, not a file: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, RuntimeError, ValueError) as error:
            reason = (str(error).strip().splitlines() or ["unreadable"])[0][:200]
            raise EssencekitError(
                f"cannot read CLIP weights {path}: {reason} (is the file complete? re-download it with {fix})"
            ) from None
    else:
        if _is_torchscript_archive(path):
            raise EssencekitError(
                f"{path} is a TorchScript archive (OpenAI's original CLIP download); essencekit loads "
                f"the converted open_clip state dict that {fix} writes"
            )
        from .checkpoints import load_checkpoint, require_mapping

        state = require_mapping(load_checkpoint(path, what="CLIP state dict"), path, "CLIP state dict")
        if isinstance(state.get("state_dict"), dict):  # an open_clip training checkpoint
            state = state["state_dict"]
        if state and all(str(k).startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise EssencekitError(
            f"{path} is not a CLIP state dict: {len(not_tensors)} entries are not tensors (e.g. {not_tensors[0]!r})"
        )
    return dict(state)


def _clip_class(config: dict):
    import open_clip.model

    config = dict(config)
    custom_text = config.pop("custom_text", False)
    return (open_clip.model.CustomTextCLIP if custom_text else open_clip.model.CLIP), config


def build_clip_model(variant: ClipVariant, *, device: torch.device | str | None = None) -> nn.Module:
    """The full open_clip model of ``variant`` (both towers), randomly initialised; on the
    ``meta`` device it costs nothing and shows the expected keys and shapes."""
    cls, config = _clip_class(variant.open_clip_config)
    if device is None:
        return cls(**config)
    with torch.device(device):
        return cls(**config)


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def build_clip_visual(
    variant: ClipVariant, state_dict: dict[str, torch.Tensor], *, source: str | os.PathLike = "state dict"
) -> nn.Module:
    """Load ``state_dict`` (open_clip layout, both towers) strictly into ``variant``'s
    architecture and return its image tower in float32 on the CPU, frozen, in eval mode.

    The whole model is built on the ``meta`` device, so no random initialisation runs and the
    file's tensors become the parameters; the text tower is checked against the file like the
    image tower, then discarded. OpenAI's metadata keys (``input_resolution``,
    ``context_length``, ``vocab_size``) are ignored, and missing BatchNorm
    ``num_batches_tracked`` counters (unused in eval mode) are filled with zeros. Anything else
    missing, unexpected or of another shape raises a one-line :class:`EssencekitError`.
    """
    return build_clip_towers(variant, state_dict, source=source)[0]


def build_clip_towers(
    variant: ClipVariant, state_dict: dict[str, torch.Tensor], *, source: str | os.PathLike = "state dict",
    text: bool = False,
) -> tuple[nn.Module, ClipTextTower | None]:
    """As :func:`build_clip_visual`, from the same one strict load: ``(image tower, text
    tower)``, the text tower (a :class:`ClipTextTower`) only when ``text`` is true, else
    ``None`` (it is discarded, as :func:`build_clip_visual` does). Keeping it costs no extra
    read: the file holds both towers and both are checked anyway."""
    if text:
        tokenizer_problem = _tokenizer_problem(variant)
        if tokenizer_problem:
            raise EssencekitError(f"CLIP {variant.name}: {tokenizer_problem}")
    model = build_clip_model(variant, device="meta")
    expected = model.state_dict()
    state = {k: v for k, v in state_dict.items() if k not in _OPENAI_METADATA_KEYS}
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=value.dtype)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and _shape(state[k]) != _shape(expected[k])]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {_shape(state[k])}, expected {_shape(expected[k])})"
            )
        raise EssencekitError(
            f"{source} does not fit CLIP {variant.name}: {', '.join(parts)}; it needs the "
            f"`{variant.weights}` weights (`essencekit pull-weights {variant.weights}`)"
        )
    model.load_state_dict(state, strict=True, assign=True)
    visual = model.visual
    text_tower = None
    if text:
        del model.visual  # the text tower keeps the rest: embeddings, transformer, projection
        text_tower = ClipTextTower(model, variant)
        _check_materialised(text_tower, variant, "text")
    del model  # without text, the text tower goes with it: only image embeddings are needed
    _check_materialised(visual, variant, "image")
    visual = visual.float()
    for param in visual.parameters():
        param.requires_grad_(False)
    return visual.eval(), text_tower


def _check_materialised(tower: nn.Module, variant: ClipVariant, which: str) -> None:
    leftover = [n for n, t in list(tower.named_parameters()) + list(tower.named_buffers()) if t.is_meta]
    if leftover:  # a non-persistent buffer of an unusual tower: cannot come from a file
        raise EssencekitError(
            f"CLIP {variant.name}: the {which} tower has tensors no state dict can fill ({leftover[0]}); "
            "this open_clip config is not supported"
        )


# ---------------------------------------------------------------------------------------
# the text tower (only built when a text target is given)


def _tokenizer_problem(variant: ClipVariant) -> str:
    """Why open_clip's CLIP tokenizer does not fit ``variant``'s text tower ('' when it does)."""
    text_cfg = variant.open_clip_config.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        return "its text tower uses a Hugging Face tokenizer; text targets support open_clip's CLIP tokenizer only"
    vocab = int(text_cfg.get("vocab_size", 49408))
    needed = len(_tokenizer(int(text_cfg.get("context_length", 77))).encoder)
    if vocab < needed:
        return f"its text tower has a vocabulary of {vocab} tokens, open_clip's CLIP tokenizer needs {needed}"
    return ""


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    # OpenAI's byte-pair encoding, shipped inside the open_clip package: no download
    return SimpleTokenizer(context_length=context_length)


def tokenize(texts: str | list[str], variant: ClipVariant) -> torch.Tensor:
    """``[B, context_length]`` token ids of ``texts`` by open_clip's CLIP tokenizer (OpenAI's
    BPE, lower-cased and whitespace-cleaned, start and end tokens, zero padding, truncated to
    the variant's context length with the end token kept)."""
    context_length = int(variant.open_clip_config.get("text_cfg", {}).get("context_length", 77))
    return _tokenizer(context_length)([texts] if isinstance(texts, str) else list(texts))


class ClipTextTower(nn.Module):
    """The text half of an open_clip model (its image tower removed), frozen, float32, eval
    mode: ``forward(tokens [B, L]) -> [B, embed_dim]``, open_clip's own ``encode_text``."""

    def __init__(self, model: nn.Module, variant: ClipVariant):
        super().__init__()
        # the causal mask is a non-persistent buffer (built, not read, so still on ``meta``):
        # open_clip's form, -inf above the diagonal
        for module in model.modules():
            mask = module._buffers.get("attn_mask")
            if mask is not None and mask.is_meta:
                module.register_buffer(
                    "attn_mask", torch.full(tuple(mask.shape), float("-inf")).triu_(1), persistent=False
                )
        self.model = model.float()
        self.variant = variant
        for param in self.model.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


# ---------------------------------------------------------------------------------------
# images


def _open_image(source) -> PIL.Image.Image:  # noqa: F821
    # the target reader every command uses: EXIF orientation, the pixel limit, HEIC, RGB, and
    # one-line errors that name the file
    from PIL import Image

    from .images import read_target

    if isinstance(source, (Image.Image, str, os.PathLike)):
        return read_target(source).image
    raise TypeError(f"encode_target needs a PIL image or an image path, got {type(source).__name__}")


def _to_tensor(image) -> torch.Tensor:
    import numpy as np

    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def raw_target_pixels(image, generator_size: int) -> torch.Tensor:
    """A target for the ``raw`` mode: RGB, center-cropped to a square, resized to the
    generator's size and mapped to [-1, 1], as ``[1, 3, generator_size, generator_size]``:
    what a generated image of the same face looks like before :func:`clip_resize`."""
    from PIL import Image

    from .images import to_rgb

    image = to_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != generator_size:
        # Lanczos: antialiased when shrinking large photos, sharp when enlarging small ones
        image = image.resize((generator_size, generator_size), Image.Resampling.LANCZOS)
    return _to_tensor(image).float() / 127.5 - 1.0


class ClipEncoder(nn.Module):
    """A frozen CLIP image tower with the preprocessing of one input mode.

    ``encode_generated(images)`` takes generator outputs ``[B, 3, S, S]`` in [-1, 1] (any
    ``S``) and returns ``[B, embed_dim]`` float32 embeddings, not normalised, differentiable
    with respect to ``images``. ``encode_target(image)`` takes a PIL image (or a path) and
    returns ``[1, embed_dim]`` without autograd history. ``encode_text(texts)`` embeds texts
    with the text tower, when the encoder was loaded with one (``load_clip(..., text=True)``).
    The module stays in eval mode: ``train()`` does not switch BatchNorm statistics (RN50)
    back on.
    """

    def __init__(self, visual: nn.Module, variant: ClipVariant, *, input_mode: str = "raw", generator_size: int = 1024,
                 text: ClipTextTower | None = None):
        super().__init__()
        _check_options(input_mode, generator_size)
        self.visual = visual
        self.text = text
        self.variant = variant
        self.input_mode = input_mode
        self.generator_size = int(generator_size)
        self.embed_dim = variant.embed_dim
        self.image_size = variant.image_size
        self.register_buffer("mean", torch.tensor(variant.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(variant.std).view(1, 3, 1, 1), persistent=False)
        self._standard_transform = None
        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def extra_repr(self) -> str:
        return f"variant={self.variant.name!r}, input_mode={self.input_mode!r}, generator_size={self.generator_size}"

    @property
    def dtype(self) -> torch.dtype:
        """float32, or float64 after ``.double()`` (rounding-free checks); outputs of half
        precision autocast come back in this dtype too."""
        return self.mean.dtype

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels).to(self.dtype)

    def encode_generated(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encode_generated needs [B, 3, S, S] images, got shape {tuple(images.shape)}")
        pixels = clip_resize(images.to(device=self.device, dtype=self.dtype), self.image_size)
        if self.input_mode == "standard":
            pixels = ((pixels + 1.0) / 2.0 - self.mean) / self.std
        return self._embed(pixels)

    forward = encode_generated

    def preprocess_target(self, image) -> torch.Tensor:
        """The ``[1, 3, image_size, image_size]`` pixels CLIP sees for target ``image``."""
        image = _open_image(image)
        if self.input_mode == "raw":
            pixels = raw_target_pixels(image, self.generator_size).to(self.device)
            return clip_resize(pixels, self.image_size)
        if self._standard_transform is None:
            from open_clip.transform import image_transform

            # CLIP's own evaluation preprocessing: bicubic resize of the short side, center
            # crop, mean/std
            self._standard_transform = image_transform(
                self.image_size, is_train=False, mean=self.variant.mean, std=self.variant.std,
                resize_mode="shortest", interpolation="bicubic",
            )
        return self._standard_transform(image).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def encode_target(self, image) -> torch.Tensor:
        return self._embed(self.preprocess_target(image))

    @property
    def has_text(self) -> bool:
        """Whether the text tower was loaded (``load_clip(..., text=True)``)."""
        return self.text is not None

    @torch.no_grad()
    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        """``[B, embed_dim]`` float embeddings (not normalised) of ``texts`` by CLIP's text
        tower, tokenized by open_clip's CLIP tokenizer (:func:`tokenize`)."""
        if self.text is None:
            raise EssencekitError(
                f"this CLIP {self.variant.name} encoder was loaded without its text tower: load it with text=True"
            )
        tokens = tokenize(texts, self.variant).to(self.device)
        return self.text(tokens).to(self.dtype)


def _check_options(input_mode: str, generator_size: int) -> None:
    if input_mode not in INPUT_MODES:
        raise EssencekitError(f"unknown CLIP input mode {input_mode!r}; choose one of: {', '.join(INPUT_MODES)}")
    if isinstance(generator_size, bool) or not isinstance(generator_size, int) or generator_size <= 0:
        raise EssencekitError(f"generator_size must be a positive number of pixels, got {generator_size!r}")


def load_clip(
    name: str | None = None,
    device: Any = None,
    *,
    input_mode: str = "raw",
    generator_size: int = 1024,
    weights: str | os.PathLike | None = None,
    text: bool = False,
) -> ClipEncoder:
    """Load the registered CLIP variant ``name`` (``"ViT-B/32"``, ``"RN50"``; ``None`` for the
    highest-priority one, ViT-B/32 among the built-ins) as a frozen
    :class:`ClipEncoder` on ``device`` (``None``, a backend name, a ``torch.device`` or a
    :class:`~essencekit.Backend`).

    ``weights`` is a ``.safetensors`` file or a plain ``.pt``/``.pth`` state dict in
    open_clip's layout; ``None`` takes the variant's artifact from essencekit's cache (an
    error names the ``essencekit pull-weights`` command when it is missing). ``input_mode``
    is ``"raw"`` or ``"standard"``; ``generator_size`` is the size raw-mode targets are
    brought to before the resize generated images get. ``text``: also keep the text tower
    (from the same read of the same file) for :meth:`ClipEncoder.encode_text`; without it the
    text tower is checked and discarded, as before.
    """
    from .backends import resolve_backend

    variant = get_variant(name)
    _check_options(input_mode, generator_size)
    backend = resolve_backend(device)
    from .weights import resolve_weights

    path = resolve_weights(weights, variant.weights)
    state = read_clip_state_dict(path, artifact=variant.weights)
    visual, text_tower = build_clip_towers(variant, state, source=path, text=text)
    encoder = ClipEncoder(visual, variant, input_mode=input_mode, generator_size=generator_size, text=text_tower)
    return backend.prepare(encoder)
