"""What a CLIP variant is: the object ``register_clip_models`` plugins register.

Plain data, apart from :mod:`essencekit.clip` (which builds the models and needs torch), so
that registering and listing variants (every command does) never imports torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .errors import EssencekitError

# OpenAI's CLIP normalisation (also open_clip.OPENAI_DATASET_MEAN/STD)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipVariant:
    """A CLIP model that ``register_clip_models`` plugins register.

    ``open_clip_config`` is the keyword arguments of ``open_clip.model.CLIP`` (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, ``quick_gelu``), exactly as open_clip's JSON model configs
    hold them; OpenAI weights need ``quick_gelu=True``. ``weights`` names the registered
    weight artifact whose file is an open_clip-layout state dict for that config. ``mean`` and
    ``std`` are the normalisation of the ``standard`` input mode; ``image_size`` is CLIP's
    input size. ``priority`` orders the default: where no CLIP model is named, the registered
    variant with the highest priority is used (the built-ins: ViT-B/32 10, RN50 0).
    """

    name: str
    open_clip_config: dict = field(hash=False)
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int = 224
    description: str = ""
    priority: int = 0

    def __post_init__(self):
        problems = []
        config = self.open_clip_config
        if not isinstance(config, dict):
            problems.append("open_clip_config must be a dict of open_clip.model.CLIP arguments")
        else:
            # a private copy: a caller mutating its dict must not change a registered variant
            config = copy.deepcopy(config)
            object.__setattr__(self, "open_clip_config", config)
            if not isinstance(config.get("embed_dim"), int):
                problems.append("open_clip_config needs an integer embed_dim")
            vision = config.get("vision_cfg")
            if not isinstance(vision, dict):
                problems.append("open_clip_config needs a vision_cfg dict")
            elif vision.get("image_size", 224) != self.image_size:
                problems.append(f"vision_cfg image_size {vision.get('image_size')} != image_size {self.image_size}")
            if not isinstance(config.get("text_cfg"), dict):
                problems.append("open_clip_config needs a text_cfg dict (the weights file holds both towers)")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std need 3 values (R, G, B)")
        elif min(self.std) <= 0:
            problems.append("std values must be positive")
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            problems.append("image_size must be a positive integer")
        if not self.weights:
            problems.append("weights must name a weight artifact")
        if not isinstance(self.priority, int):
            problems.append("priority must be an integer")
        if problems:
            raise EssencekitError(f"invalid CLIP variant {self.name!r}: " + "; ".join(problems))

    @property
    def embed_dim(self) -> int:
        """The size of the image embedding."""
        return self.open_clip_config["embed_dim"]


def default_clip_name() -> str:
    """The name of the CLIP variant used where none is named: the registered one with the
    highest ``priority`` (ties: the first registered)."""
    from .plugins import registered

    variants = registered("clip_models")
    if not variants:
        raise EssencekitError("no CLIP model is registered (run `essencekit plugins` to see what failed to load)")
    return max(variants.values(), key=lambda variant: variant.priority).name
