"""What a downloadable artifact is: the object ``register_weights`` plugins register."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import EssencekitError

KINDS = ("generator", "encoder", "clip", "landmarks", "essence", "latents", "metric")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# what pull-weights turns a downloaded file into, once its checksum holds (essencekit.convert):
#   clip-torchscript  an OpenAI CLIP TorchScript archive -> safetensors in open_clip's layout
#   essence-npy       a published TargetCLIP (1, n_latent, style_dim) .npy -> an essencekit essence .pt
#   safe-checkpoint   a PyTorch checkpoint that weights_only=True refuses as published (an
#                     argparse.Namespace, NumPy scalars) -> the same data as plain containers
#   open-clip-safetensors
#                     already safetensors in open_clip's layout: nothing is converted, but the
#                     file must be a well-formed safetensors file with CLIP keys ("visual.*",
#                     and the shapes listed in extra["expect_shapes"]) before it is accepted
#                     (and, when unpinned, before its first download is pinned)
CONVERSIONS = ("clip-torchscript", "essence-npy", "safe-checkpoint", "open-clip-safetensors")


@dataclass(frozen=True)
class WeightArtifact:
    """One file that ``essencekit pull-weights`` can fetch, verify and place in the cache.

    ``urls`` are mirrors tried in order. ``sha256`` is the lower-case hex digest, or ``None``
    for an unpinned file (its first download is pinned in the user's cache). ``size`` is in
    bytes (``None`` when unknown). ``license`` is the license text or its name and where it is
    published; ``license_must_accept`` makes ``pull-weights`` ask once before downloading.
    ``convert`` (one of :data:`CONVERSIONS`, or ``None``) names the conversion applied once
    after download; loaders then get the converted file from ``essencekit.cache.resolve_artifact``.

    ``fallback`` names another registered artifact that provides the same weights in another
    form (say, the same CLIP weights as open_clip safetensors on another host). When every
    mirror of this artifact fails, ``pull-weights`` says so and pulls the fallback instead, and
    ``resolve_artifact`` returns the fallback's verified file while this one is missing. The
    fallback must be of the same ``kind``; its own fallback is not followed. The name can only
    be checked once every plugin has registered, so an unknown name is reported when the
    artifact is pulled or resolved, not here.
    """

    name: str
    kind: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    license: str
    description: str
    group: str = "extra"
    license_must_accept: bool = False
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    convert: str | None = None
    fallback: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "urls", tuple(self.urls))
        problems = []
        if not _NAME.match(self.name):
            problems.append("name must be lower-case letters, digits, '.', '_' or '-'")
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}")
        if not self.filename or "/" in self.filename or "\\" in self.filename or self.filename.startswith("."):
            problems.append("filename must be a plain file name")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            problems.append("sha256 must be 64 lower-case hex digits or None")
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            problems.append("size must be a positive number of bytes or None")
        if self.convert is not None and self.convert not in CONVERSIONS:
            problems.append(f"convert must be one of {', '.join(CONVERSIONS)} or None")
        if self.fallback is not None and (not isinstance(self.fallback, str) or not _NAME.match(self.fallback)):
            problems.append("fallback must be the name of another artifact or None")
        elif self.fallback is not None and self.fallback == self.name:
            problems.append("fallback must name another artifact, not itself")
        if not self.urls:
            problems.append("at least one URL is needed")
        for url in self.urls:
            if not re.match(r"^https?://[^\s/]+/\S*$", url):
                problems.append(f"not an http(s) URL: {url!r}")
        if problems:
            raise EssencekitError(f"invalid weight artifact {self.name!r}: " + "; ".join(problems))

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None


def license_summary(text: str) -> str:
    """A licence's name for tables: its text up to the first ``": "`` (the registered texts
    read "NAME: details"; a URL's ``://`` is no separator), else its first line, whole."""
    first_line = text.strip().split("\n")[0]
    return first_line.split(": ", 1)[0].strip()


# --------------------------------------------------------------------------- resolving weights
# One resolver for every command and loader: a file as given, or a registered artifact's cached
# file, with one not-found error.


def _artifact_name(path_or_name, default_artifact: str) -> str | None:
    """The registered artifact ``path_or_name`` names (``default_artifact`` for ``None``), or
    ``None`` when it is a file path: an existing file wins over an artifact of the same name."""
    from pathlib import Path

    from .plugins import registered

    if path_or_name is None:
        return default_artifact
    name = str(path_or_name)
    return name if not Path(name).exists() and name in registered("weights") else None


def resolve_weights(path_or_name, default_artifact: str):
    """The weights file of ``path_or_name``: a file path as given, or the cached file of a
    registered artifact name (``default_artifact`` for ``None``), verified; a missing artifact
    names the pull-weights command, a missing file is one error naming the path."""
    from pathlib import Path

    artifact = _artifact_name(path_or_name, default_artifact)
    if artifact is not None:
        from .cache import resolve_artifact

        return resolve_artifact(artifact)
    path = Path(path_or_name)
    if path.is_dir():
        raise EssencekitError(f"{path} is a folder, not a weights file (give a file or a registered artifact name)")
    if not path.is_file():
        raise EssencekitError(f"weights file not found: {path} (give a file or a registered artifact name)")
    return path


def weights_label(path_or_name, default_artifact: str) -> str:
    """How run metadata names the weights: the artifact name, or the file's name."""
    from pathlib import Path

    return _artifact_name(path_or_name, default_artifact) or Path(path_or_name).name


def weights_identity(path_or_name, default_artifact: str):
    """``(file, label, sha256)`` of the weights :func:`resolve_weights` finds: the sha256 of the
    file as published (from the cache record of an artifact), else of the file."""
    from .cache import read_record, sha256_file

    path = resolve_weights(path_or_name, default_artifact)
    artifact = _artifact_name(path_or_name, default_artifact)
    if artifact is not None:
        record = read_record(artifact)
        return path, artifact, record.source_sha256 if record is not None else sha256_file(path)
    return path, path.name, sha256_file(path)
