"""The Fréchet Inception Distance (FID) of ``essencekit evaluate --fid``, as the paper reports it.

The Inception features come from torch-fidelity's ``FeatureExtractorInceptionV3``: the
TensorFlow FID Inception (2015-12-05) re-implemented in PyTorch, with TensorFlow 1.x's bilinear
resize to 299 px, whose FID its authors check against the TTUR TensorFlow reference to a
relative error below 1e-5. torch-fidelity is imported only here, and only when FID is asked for.

Its weights are the artifact :data:`INCEPTION_ARTIFACT` (``essencekit pull-weights
inception-v3-fid``), resolved like every other weights file (a file path or the cache), read
with ``torch.load(weights_only=True)``: torch-fidelity is never allowed to download them, nor
to unpickle a file itself.

The distance is computed from 2048-d pool features: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) -
2 tr((S1 S2)^(1/2))``, with the sample means and (unbiased) covariances in float64, the trace of
the matrix square root from the eigenvalues of ``S1 S2`` as torch-fidelity (and
TTUR) take it, or, with fewer images than features, from an equivalent smaller matrix
(:func:`frechet_distance`).

The real images' features are kept in the feature cache (:mod:`essencekit.feature_cache`),
keyed by each image's bytes and the weights' sha256, so a second evaluation against the same
folder only hashes its files.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EssencekitError, OptionError

INCEPTION_ARTIFACT = "inception-v3-fid"
FEATURE_DIM = 2048
#: With fewer images than feature dimensions on either side, the covariance is rank-deficient and
#: FID is biased upwards and unstable (it depends on the number of images): a warning is given.
MIN_STABLE_IMAGES = FEATURE_DIM
BATCH = 16
FIDELITY_HINT = "pip install torch-fidelity"


@dataclass(frozen=True)
class Fid:
    """One FID value and the numbers of images it was computed from."""

    value: float
    n_generated: int
    n_real: int

    def to_json(self) -> dict:
        return {"value": self.value, "n_generated": self.n_generated, "n_real": self.n_real}

    def format(self, digits: int = 2) -> str:
        return f"{self.value:.{digits}f}"


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``N - 1``) covariance of ``[N, D]`` features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise EssencekitError(f"FID needs at least 2 images on each side, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between Gaussians fitted to two ``[N, D]`` feature sets (FID when
    the features are the Inception pool features):
    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.

    ``tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``S1 S2``, which
    are the squared singular values of ``A1 A2^T / sqrt((N1 - 1)(N2 - 1))`` (``Ai`` the centred
    features): with fewer images than dimensions on one side (68 edits against 2048 features)
    that ``N1 x N2`` matrix is far smaller than ``S1 S2``, and its singular values are real and
    non-negative, with no complex rounding to discard. With enough images on both sides the
    reference's own way is used: the eigenvalues of ``S1 S2`` (TTUR, torch-fidelity)."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    (mu1, sigma1), (mu2, sigma2) = statistics(a), statistics(b)
    if mu1.shape != mu2.shape:
        raise EssencekitError(f"FID features differ in size: {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2
    if min(a.shape[0], b.shape[0]) < a.shape[1]:
        cross = (a - mu1) @ (b - mu2).T / np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1))
        tr_covmean = float(np.linalg.svd(cross, compute_uv=False).sum())
    else:
        eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
        tr_covmean = float(np.sqrt(eigenvalues).real.sum())
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def few_images_warning(n_generated: int, n_real: int) -> str | None:
    """The warning for a FID from too few images (``None`` when there are enough)."""
    few = [f"{n} {what}" for n, what in ((n_real, "real"), (n_generated, "generated")) if n < MIN_STABLE_IMAGES]
    if not few:
        return None
    return (f"FID from {' and '.join(few)} image(s) is not stable: with fewer than {MIN_STABLE_IMAGES} images "
            f"(the feature dimension) the covariance is rank-deficient and FID is biased upwards; compare "
            f"figures only at equal image counts (the paper uses 7,000 real FFHQ images)")


def _fidelity():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:
        raise EssencekitError(f"FID needs torch-fidelity, which is not installed ({FIDELITY_HINT})") from error
    return FeatureExtractorInceptionV3


def load_inception(weights=None, device="cpu"):
    """torch-fidelity's FID Inception with the weights :func:`~essencekit.weights.resolve_weights`
    finds for ``weights`` (a file, an artifact name, or ``None``: :data:`INCEPTION_ARTIFACT`).
    Returns ``(model, label, sha256)``."""
    from ..weights import weights_identity

    path, label, sha256 = weights_identity(weights, INCEPTION_ARTIFACT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is one message naming it
        raise EssencekitError(f"{path}: not a FID Inception weights file ({type(error).__name__})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EssencekitError(f"{path}: not a FID Inception weights file (expected a state dict of tensors)")
    # torch-fidelity reads the weights with weights_only=False: it is handed only what was read
    # safely above, saved again from plain tensors, never the file itself
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    extractor = _fidelity()
    try:
        model = extractor(name="inception-v3-compat", features_list=[str(FEATURE_DIM)],
                          feature_extractor_weights_path=buffer)
    except RuntimeError as error:  # missing or unexpected keys, wrong shapes
        raise EssencekitError(f"{path}: not the FID Inception's weights ({str(error).splitlines()[0]})") from error
    return model.to(device).eval(), label, sha256


class InceptionFeatures:
    """Collects the 2048-d Inception features of 8-bit RGB images (PIL images or ``[H, W, 3]``
    uint8 arrays), a few at a time; images of one size are batched together."""

    def __init__(self, model, device="cpu"):
        self.model, self.device = model, torch.device(device)
        self.pending: list[tuple[object, torch.Tensor]] = []
        self.out: dict = {}

    def add(self, key, image) -> None:
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise EssencekitError(f"FID takes RGB images, got an array of shape {array.shape}")
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.pending and self.pending[-1][1].shape != pixels.shape:
            self.flush()
        self.pending.append((key, pixels))
        if len(self.pending) >= BATCH:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if not self.pending:
            return
        keys = [key for key, _ in self.pending]
        batch = torch.stack([pixels for _, pixels in self.pending]).to(self.device)
        self.pending = []
        (features,) = self.model(batch)
        for key, row in zip(keys, features.double().cpu()):
            self.out[key] = row


def real_images(folder) -> list[Path]:
    """The image files directly in ``folder`` (not its subfolders), sorted; an ``OptionError``
    naming ``fid`` when the folder is missing or holds none."""
    from ..inputs import image_suffixes

    path = Path(folder)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise OptionError(f"fid: the folder of real images {path} {what}", parameter="fid")
    suffixes = image_suffixes()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise OptionError(f"fid: no images in {path} (give a folder of real face images, e.g. FFHQ)", parameter="fid")
    return files


@dataclass
class RealFeatures:
    """The Inception features of a folder's real images: ``features`` ``[N, 2048]`` float64 in
    the files' order; ``cached``: how many came from the feature cache; ``unwritable``: whether
    new features could not be kept there (a full disk, a read-only cache)."""

    features: np.ndarray
    cached: int = 0
    unwritable: bool = False


def real_features(files: Iterable[Path], model, device="cpu", *, cache=None,
                  progress: Callable[[int], None] | None = None) -> RealFeatures:
    """The Inception features of the real images ``files``. With ``cache`` (a
    :class:`~essencekit.feature_cache.FeatureCache` for ``model``'s weights) an image whose
    bytes were measured before is only hashed, not decoded nor run through Inception, and each
    new image's features are kept as soon as its batch is done (an interrupted run keeps what
    it measured). ``progress`` is called with 1 per image."""
    from ..cache import sha256_file
    from ..images import read_image

    collector = InceptionFeatures(model, device)
    found: dict[int, np.ndarray] = {}
    to_keep: dict[int, str] = {}  # image index -> sha256, until its batch has run
    result = RealFeatures(np.empty((0, FEATURE_DIM)))

    def keep_done() -> None:
        for index in [i for i in to_keep if i in collector.out]:
            sha256 = to_keep.pop(index)
            if not result.unwritable:
                result.unwritable = not cache.store(sha256, collector.out[index].numpy())

    count = 0
    for index, file in enumerate(files):
        count += 1
        sha256 = None
        if cache is not None:
            with contextlib.suppress(OSError):  # unreadable: read_image below says why, naming the file
                sha256 = sha256_file(file)
        hit = cache.load(sha256) if sha256 is not None else None
        if hit is not None:
            found[index] = hit
            result.cached += 1
        else:
            collector.add(index, read_image(file))
            if sha256 is not None:
                to_keep[index] = sha256
                keep_done()
        if progress is not None:
            progress(1)
    collector.flush()
    if cache is not None:
        keep_done()
    rows = [found[i] if i in found else collector.out[i].numpy() for i in range(count)]
    result.features = np.stack(rows).astype(np.float64) if rows else np.empty((0, FEATURE_DIM))
    return result


def folder_label(folder: str | os.PathLike) -> str:
    """How reports name the real folder: its own name, not where it lives."""
    return Path(folder).name or str(folder)
