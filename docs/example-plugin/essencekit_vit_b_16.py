"""An essencekit plugin adding OpenAI's CLIP ViT-B/16 as a CLIP variant.

After `pip install -e docs/example-plugin`:

    essencekit pull-weights clip-vit-b-16
    essencekit extract target.jpg --clip ViT-B/16
"""

import essencekit

# Every essencekit command loads plugins, so this module imports nothing heavy (no torch, no
# open_clip): the model configuration is plain data, and `essencekit --help` stays instant.

SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"  # in OpenAI's URL


@essencekit.hookimpl
def register_weights(register):
    register(
        essencekit.WeightArtifact(
            name="clip-vit-b-16",
            kind="clip",
            filename="ViT-B-16.pt",
            urls=(f"https://openaipublic.azureedge.net/clip/models/{SHA256}/ViT-B-16.pt",),
            sha256=SHA256,
            size=None,
            license="MIT (OpenAI CLIP, github.com/openai/CLIP)",
            description="OpenAI CLIP ViT-B/16 (converted to safetensors on download)",
            group="clip-extra",
            # OpenAI's file is a TorchScript archive: convert it once to a safe form
            convert="clip-torchscript",
            # tried when OpenAI's URL fails: the same weights as open_clip safetensors
            fallback="clip-vit-b-16-hf",
        )
    )
    register(
        essencekit.WeightArtifact(
            name="clip-vit-b-16-hf",
            kind="clip",
            filename="vit_base_patch16_clip_224.openai.safetensors",
            urls=("https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/"
                  "open_clip_model.safetensors",),
            sha256=None,  # not pinned: trusted on first use
            size=None,
            license="MIT (OpenAI CLIP, via huggingface.co/timm/vit_base_patch16_clip_224.openai)",
            description="OpenAI CLIP ViT-B/16 as open_clip safetensors; clip-vit-b-16's fallback",
            group="clip-extra",
            convert="open-clip-safetensors",
        )
    )


@essencekit.hookimpl
def register_clip_models(register):
    register(
        essencekit.ClipVariant(
            name="ViT-B/16",
            # quick-GELU: OpenAI's weights in a GELU model load silently and compute wrong embeddings
            open_clip_config={  # open_clip.get_model_config("ViT-B-16-quickgelu"), as data
                "embed_dim": 512, "quick_gelu": True,
                "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
            },
            weights="clip-vit-b-16",
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            description="OpenAI CLIP ViT-B/16, finer patches than ViT-B/32",
        )
    )
