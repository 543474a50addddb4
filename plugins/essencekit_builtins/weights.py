"""The built-in weight artifacts, registered through the same hook third-party plugins use.

Where each fact comes from:

* Sizes and sha256 of the StyleGAN2, e4e and ArcFace checkpoints and of ``w_plus.npy``: read
  from public Git LFS pointers of the Hugging Face mirrors and checked against a second mirror.
* OpenAI CLIP: the sha256 is the path segment of OpenAI's own URL (openai/CLIP ``clip.py``,
  open_clip's ``pretrained.py``); the size is not published, so it is left unknown. Those URLs
  have been reported answering 404 since late 2025 (openai/CLIP issue #516), so each names a
  ``fallback``: the same OpenAI weights as open_clip-layout safetensors in timm's Hugging Face
  repositories, the ``hf_hub`` entries of open_clip's ``pretrained.py`` for the ``openai``
  tag (``timm/vit_base_patch32_clip_224.openai``, ``timm/resnet50_clip.openai``, file
  ``open_clip_model.safetensors``: open_clip's ``HF_SAFE_WEIGHTS_NAME``). Their sha256 and
  exact size could not be read from the build machines (about 605 MB and 408 MB), so they are
  unpinned (trust on first use), and every download must be a well-formed safetensors file
  with the model's CLIP keys and shapes before it is pinned.
* The 19 TargetCLIP essences: the sha256 of the published ``dirs/*.npy`` of
  hila-chefer/TargetCLIP at commit c59cb293a4ecbfa0a8f4bb1570745f2de2b5d88f (2022-10-02),
  kept in tests/fixtures/targetclip-SHA256SUMS; each is a (1, 18, 512) float32 array, 36,992
  bytes.
* The FID Inception (``inception-v3-fid``): the TensorFlow FID Inception (2015-12-05) converted
  to a PyTorch state dict by mseitzer/pytorch-fid and republished by torch-fidelity (the
  ``URL_INCEPTION_V3`` of torch-fidelity 0.4.0's ``feature_extractor_inceptionv3.py``). Both
  file names end in ``-6726825d``, torch.hub's convention for the first hex digits of the
  file's sha256; the full sha256 and the size (95,628,359 bytes) are the ones several
  independent public projects pin for either file, and they agree with that prefix.
* Mirrors: stable hosts first (Hugging Face ``resolve/main`` URLs, the commit-pinned raw
  GitHub URL), Google Drive last. The Hugging Face paths could not be checked from the build
  machines; a wrong mirror is harmless because the sha256 guards every file.

The face aligner's landmark model ships inside its PyPI package and needs no artifact here.
"""

from __future__ import annotations

import essencekit
from essencekit import WeightArtifact

_HF = "https://huggingface.co/{repo}/resolve/main/{path}"
_DRIVE = "https://drive.usercontent.google.com/download?id={id}&export=download"
_OPENAI = "https://openaipublic.azureedge.net/clip/models/{sha}/{file}"
_OPENAI_BLOB = "https://openaipublic.blob.core.windows.net/clip/models/{sha}/{file}"
TARGETCLIP_COMMIT = "c59cb293a4ecbfa0a8f4bb1570745f2de2b5d88f"
_TARGETCLIP_RAW = "https://raw.githubusercontent.com/hila-chefer/TargetCLIP/{ref}/dirs/{file}"

_NVIDIA_NC = (
    "the StyleGAN2 weights are under the Nvidia Source Code License-NC "
    "(https://nvlabs.github.io/stylegan2/license.html): non-commercial use only (research and "
    "evaluation); they were trained on FFHQ, whose images are under CC BY-NC-SA 4.0 and similar "
    "licenses (https://github.com/NVlabs/ffhq-dataset)"
)
_NO_LICENSE = (
    "none published: hila-chefer/TargetCLIP has no license file. essencekit downloads the files "
    "to your machine from the authors' repository and does not redistribute them; the authors "
    "keep their rights"
)
_OPENAI_MIT = "MIT: openai/CLIP (https://github.com/openai/CLIP/blob/main/LICENSE)"
_OPENAI_MIT_VIA_TIMM = (
    "MIT: the weights are OpenAI's CLIP, MIT-licensed by openai/CLIP "
    "(https://github.com/openai/CLIP/blob/main/LICENSE); the Hugging Face repository {repo} that "
    "repackages them declares apache-2.0 for its packaging"
)
_TIMM_VIT_B_32 = "timm/vit_base_patch32_clip_224.openai"
_TIMM_RN50 = "timm/resnet50_clip.openai"
_OPEN_CLIP_FILE = "open_clip_model.safetensors"  # open_clip's HF_SAFE_WEIGHTS_NAME


def _targetclip_urls(file: str) -> tuple[str, ...]:
    return (
        _TARGETCLIP_RAW.format(ref=TARGETCLIP_COMMIT, file=file),
        _TARGETCLIP_RAW.format(ref="main", file=file),
    )


STYLEGAN2_FFHQ = WeightArtifact(
    name="stylegan2-ffhq",
    kind="generator",
    group="faces",
    filename="stylegan2-ffhq-config-f.pt",
    urls=(
        _HF.format(repo="akhaliq/OneshotCLIP-stylegan2-ffhq", path="stylegan2-ffhq-config-f.pt"),
        _HF.format(repo="wmpscc/StyleGene_CKPT", path="stylegan2-ffhq-config-f.pt"),
        _DRIVE.format(id="1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT"),
    ),
    size=381_462_551,
    sha256="bae494ef77e32a9cd1792a81a3c167692a0e64f6bcd8b06592ff42917e2ed46e",
    license=f"Nvidia Source Code License-NC, non-commercial: {_NVIDIA_NC}",
    license_must_accept=True,
    description="StyleGAN2 FFHQ 1024 px generator (config-f, rosinality's PyTorch format: g, d, g_ema, latent_avg)",
    source="NVIDIA StyleGAN2, converted by rosinality/stylegan2-pytorch; Drive id from TargetCLIP/e4e READMEs",
    # plain tensors: loads with weights_only=True as published; checked once at pull time
    convert="safe-checkpoint",
)

E4E_FFHQ = WeightArtifact(
    name="e4e-ffhq",
    kind="encoder",
    group="faces",
    filename="e4e_ffhq_encode.pt",
    urls=(
        _HF.format(repo="wmpscc/StyleGene", path="e4e_ffhq_encode.pt"),
        _HF.format(repo="zhengchong/e4e", path="e4e_ffhq_encode.pt"),
        _HF.format(repo="wmpscc/StyleGene_CKPT", path="e4e_ffhq_encode.pt"),
        _DRIVE.format(id="1cUv_reLE6k3604or78EranS7XzuVMWeO"),
    ),
    size=1_201_649_680,
    sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999",
    license=(
        "MIT + Nvidia Source Code License-NC, non-commercial: the encoder is MIT "
        "(omertov/encoder4editing); the checkpoint embeds the FFHQ StyleGAN2 generator as its "
        f"decoder, and {_NVIDIA_NC}"
    ),
    license_must_accept=True,
    description="e4e (encoder4editing) FFHQ encoder: a 256 px face to 18 W+ codes; embeds its generator",
    source="omertov/encoder4editing README (Drive id); HF mirrors that agree on the sha256",
    # its pickled options may need more than weights_only allows: converted once, allow-listed
    convert="safe-checkpoint",
)

CLIP_VIT_B_32 = WeightArtifact(
    name="clip-vit-b-32",
    kind="clip",
    group="faces",
    filename="ViT-B-32.pt",
    urls=(
        _OPENAI.format(sha="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", file="ViT-B-32.pt"),
        _OPENAI_BLOB.format(sha="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", file="ViT-B-32.pt"),
    ),
    size=None,  # not published
    sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    license=_OPENAI_MIT,
    description="OpenAI CLIP ViT-B/32, the TargetCLIP paper's model (converted once to safetensors, open_clip layout)",
    source="OpenAI (openai/CLIP clip.py _MODELS; the path segment is the file's sha256)",
    convert="clip-torchscript",
    fallback="clip-vit-b-32-hf",
)

CLIP_RN50 = WeightArtifact(
    name="clip-rn50",
    kind="clip",
    group="metrics",
    filename="RN50.pt",
    urls=(
        _OPENAI.format(sha="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", file="RN50.pt"),
        _OPENAI_BLOB.format(sha="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", file="RN50.pt"),
    ),
    size=None,  # not published
    sha256="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    license=_OPENAI_MIT,
    description="OpenAI CLIP ResNet-50, the independent judge of the evaluation (converted once to safetensors)",
    source="OpenAI (openai/CLIP clip.py _MODELS; the path segment is the file's sha256)",
    convert="clip-torchscript",
    fallback="clip-rn50-hf",
)

# the fallbacks: the same OpenAI weights, already safetensors in open_clip's layout (both
# towers, quick_gelu models), so nothing is converted; checked instead (keys and shapes)
_OPENAI_TEXT_SHAPES = {"token_embedding.weight": [49408, 512], "positional_embedding": [77, 512]}

CLIP_VIT_B_32_HF = WeightArtifact(
    name="clip-vit-b-32-hf",
    kind="clip",
    group="clip-mirrors",
    filename="vit_base_patch32_clip_224.openai.safetensors",
    urls=(_HF.format(repo=_TIMM_VIT_B_32, path=_OPEN_CLIP_FILE),),
    size=None,  # about 605 MB; the exact size could not be read from here
    sha256=None,  # not readable from here: trusted on first use
    license=_OPENAI_MIT_VIA_TIMM.format(repo=_TIMM_VIT_B_32),
    description="OpenAI CLIP ViT-B/32 as open_clip safetensors (Hugging Face, timm); clip-vit-b-32's fallback",
    source=f"huggingface.co/{_TIMM_VIT_B_32} {_OPEN_CLIP_FILE} (open_clip pretrained.py hf_hub for ViT-B-32 openai)",
    convert="open-clip-safetensors",
    extra={"expect_shapes": {"visual.conv1.weight": [768, 3, 32, 32], **_OPENAI_TEXT_SHAPES}},
)

CLIP_RN50_HF = WeightArtifact(
    name="clip-rn50-hf",
    kind="clip",
    group="clip-mirrors",
    filename="resnet50_clip.openai.safetensors",
    urls=(_HF.format(repo=_TIMM_RN50, path=_OPEN_CLIP_FILE),),
    size=None,  # about 408 MB; the exact size could not be read from here
    sha256=None,  # not readable from here: trusted on first use
    license=_OPENAI_MIT_VIA_TIMM.format(repo=_TIMM_RN50),
    description="OpenAI CLIP ResNet-50 as open_clip safetensors (Hugging Face, timm); clip-rn50's fallback",
    source=f"huggingface.co/{_TIMM_RN50} {_OPEN_CLIP_FILE} (open_clip pretrained.py hf_hub for RN50 openai)",
    convert="open-clip-safetensors",
    extra={"expect_shapes": {"visual.conv1.weight": [32, 3, 3, 3], **_OPENAI_TEXT_SHAPES}},
)

ARCFACE_IR_SE50 = WeightArtifact(
    name="arcface-ir-se50",
    kind="metric",
    group="metrics",
    filename="model_ir_se50.pth",
    urls=(
        _HF.format(repo="lithiumice/ArcFace_PyTorch", path="model_ir_se50.pth"),
        _HF.format(repo="Fubei/splatviz_inversion_checkpoints", path="model_ir_se50.pth"),
        _DRIVE.format(id="1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn"),
    ),
    size=175_367_323,
    sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
    license=(
        "MIT: published as model_ir_se50.pth by TreB1eN/InsightFace_Pytorch (MIT License); trained "
        "on MS-Celeb-1M, a face dataset its authors withdrew, so keep it to research evaluation"
    ),
    description="ArcFace IR-SE50 identity model (112 px faces to 512-d embeddings), for identity metrics",
    source="Drive id from the pSp/e4e READMEs; HF mirror lithiumice/ArcFace_PyTorch (agrees with another)",
    convert="safe-checkpoint",
)

CELEBS = WeightArtifact(
    name="celebs",
    kind="latents",
    group="metrics",
    filename="w_plus.npy",
    urls=_targetclip_urls("w_plus.npy"),
    size=2_506_880,
    sha256="394f0f166305654f49cd1b0cd3d4f2b7a51e740a449a1ebfa1c69f79d01399fa",
    license=_NO_LICENSE,
    description="the 68 celebrity W+ latents of the TargetCLIP evaluation ((68, 18, 512) float32 .npy)",
    source=f"hila-chefer/TargetCLIP dirs/w_plus.npy at {TARGETCLIP_COMMIT[:12]}",
    extra={"shape": (68, 18, 512)},
)

_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_V3_FID = WeightArtifact(
    name="inception-v3-fid",
    kind="metric",
    group="fid",
    filename=_INCEPTION_FILE,
    urls=(
        f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{_INCEPTION_FILE}",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    ),
    size=95_628_359,
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    license=(
        "Apache-2.0: the TensorFlow Inception weights of the FID reference (tensorflow/models, Apache License 2.0), "
        "converted to PyTorch by mseitzer/pytorch-fid and republished by toshas/torch-fidelity (both Apache-2.0)"
    ),
    description="the FID Inception v3 (TensorFlow 2015-12-05 weights as a PyTorch state dict), for evaluate --fid",
    source="torch-fidelity URL_INCEPTION_V3 (release v0.2.0); pytorch-fid release fid_weights (the same file)",
    # a plain state dict: loads with weights_only=True as published; checked once at pull time
    convert="safe-checkpoint",
)

# the commit that added pretrained_models/encoder_sources.pt to hila-chefer/TargetCLIP
_ENCODER_SOURCES_COMMIT = "ec34170c448f936a77c8d08a6df35f6b28f0d482"
_ENCODER_SOURCES_RAW = "https://raw.githubusercontent.com/hila-chefer/TargetCLIP/{ref}/pretrained_models/encoder_sources.pt"

ENCODER_SOURCES = WeightArtifact(
    name="encoder-sources",
    kind="latents",
    group="training",
    filename="encoder_sources.pt",
    urls=tuple(_ENCODER_SOURCES_RAW.format(ref=ref) for ref in (_ENCODER_SOURCES_COMMIT, "main")),
    size=None,  # about 0.2 MB (5 x 18 x 512 float32); the exact size could not be read from here
    sha256=None,  # not readable from here: trusted on first use, then pinned in the user's cache
    license=_NO_LICENSE,
    description="the 5 source W+ latents the TargetCLIP encoder variant trains with ((5, 18, 512), train-encoder)",
    source=f"hila-chefer/TargetCLIP pretrained_models/encoder_sources.pt at {_ENCODER_SOURCES_COMMIT[:12]}",
    extra={"shape": (5, 18, 512)},
)

# name -> sha256 of dirs/<name>.npy, as in tests/fixtures/targetclip-SHA256SUMS (checked by test_pull_weights)
ESSENCE_SHA256 = {
    "ariel": "701f5be7e01107276497e60f424e75821346efece62146c9ff2cb55bf0491b64",
    "avatar": "b198103e85f94d340355ea68b6c956273ee27eee6c18b3a5004585f7a4f5ba64",
    "beyonce": "7223ccc24f096faeb351ff51c907a40ad22f7a38ea5a462bfb59b8bebc2b98fe",
    "doc": "3299dcf3634fcdeae8385fb4e08f507724dbf1eb2cadc9936c8cc34147cc33b2",
    "dumbledore": "04bfb720ef6165fdb27bc2da3bd5fd3ebab7e637cdf453f8b9ffc4cf4562a8eb",
    "ed": "5b6483552a58302903abe9408b685c01d5414c53937d2ffd59176e184bf0c875",
    "elsa": "555e4ba7b678c6c10bbb63a1b8ce527630dc2c87ab526703f1df2f4dc871c5c1",
    "gargamel": "5a794dd3c00c46e35dce5963ddd4616a26f29fef56e6978305874c22b20996c9",
    "grindelwald": "db887f96d32d2a55a2e2f4f681231ced237b9ad30078261ac4ec7d548016f977",
    "joker": "f06a4f59abf99344ed98a9c5f47ee24b69a1a71e489856996986ad85263c8f63",
    "keanu": "a98b815f60a639dd0bef0038c5a57d7840d79f2f610fda120de22f1af22bf633",
    "megan": "3a33551088aeaabdc122b1130974555788986d7febb4c0d53b0c669dd971963f",
    "moana": "2eeaf0978b2d4a0d06b1dcc93d6b2b3892361366cbce4ff3d4572b8fefc2f4bf",
    "morgan": "fdf5acf922db348553f23741f9cb0ba618f779e2234a0243f7b35913ec4c2ba6",
    "pocahontas": "8514cff1561630436c541ecba0fb378d42ecc97f0aa8828e40842daa34e9faf8",
    "thanos": "1bb94a337e40de4a67e8adbbda68bfd312177cee14096f2fd130bd5b41b4a524",
    "trump": "a685498dd613964731b2169c63589fccf2a4b944f372845fec12c7fc830a9a19",
    "wolverine": "1f520ae39f0ba4dbaa055eacfd658c2b8eefc518c80a85ffb3467668ac7a10f5",
    "zendaya": "345fe15ad0cf890e3dd639a94c45038050cb08e923155f1b62c36faf153cef6e",
}
ESSENCE_SIZE = 36_992  # a 128-byte .npy header + 18 * 512 float32


def _essence(name: str, sha256: str) -> WeightArtifact:
    return WeightArtifact(
        name=name,
        kind="essence",
        group="essences",
        filename=f"{name}.npy",
        urls=_targetclip_urls(f"{name}.npy"),
        size=ESSENCE_SIZE,
        sha256=sha256,
        license=_NO_LICENSE,
        description=f"the published TargetCLIP essence '{name}' (a W+ direction; use with --essence {name})",
        source=f"hila-chefer/TargetCLIP dirs/{name}.npy at {TARGETCLIP_COMMIT[:12]}",
        convert="essence-npy",
        extra={"shape": (1, 18, 512)},
    )


ESSENCES = tuple(_essence(name, sha) for name, sha in ESSENCE_SHA256.items())

ARTIFACTS = (
    STYLEGAN2_FFHQ, E4E_FFHQ, CLIP_VIT_B_32, CLIP_RN50, ARCFACE_IR_SE50, CELEBS, ENCODER_SOURCES, INCEPTION_V3_FID,
    *ESSENCES,
    CLIP_VIT_B_32_HF, CLIP_RN50_HF,
)


@essencekit.hookimpl
def register_weights(register):
    for artifact in ARTIFACTS:
        register(artifact)
