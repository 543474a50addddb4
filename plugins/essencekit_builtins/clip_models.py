"""The built-in CLIP variants: OpenAI's ViT-B/32 and RN50.

The configs are open_clip's ``ViT-B-32-quickgelu`` and ``RN50-quickgelu``, written out as
data so that listing plugins does not import open_clip (nor torch:
:mod:`essencekit.clip_variant` is plain data). ``quick_gelu`` must stay True: OpenAI
trained with QuickGELU, and its weights load without complaint into a GELU model that then
computes wrong embeddings.
"""

from __future__ import annotations

import essencekit
from essencekit.clip_variant import OPENAI_MEAN, OPENAI_STD, ClipVariant

# OpenAI's text tower; the weights files hold it, so the strict load checks it too
_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}

VIT_B_32 = ClipVariant(
    name="ViT-B/32",
    open_clip_config={
        "embed_dim": 512,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": dict(_TEXT_CFG),
    },
    weights="clip-vit-b-32",
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    image_size=224,
    description="OpenAI CLIP ViT-B/32 (the TargetCLIP paper's model), 512-d embeddings",
    priority=10,  # the default: the paper's model
)

RN50 = ClipVariant(
    name="RN50",
    open_clip_config={
        "embed_dim": 1024,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": None},
        "text_cfg": dict(_TEXT_CFG),
    },
    weights="clip-rn50",
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    image_size=224,
    description="OpenAI CLIP ResNet-50 (attention pooling), 1024-d embeddings",
)


@essencekit.hookimpl
def register_clip_models(register):
    register(VIT_B_32)
    register(RN50)
