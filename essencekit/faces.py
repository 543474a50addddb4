"""Faces in real photos: find them, crop them as FFHQ (and so e4e) expects, and put edited
crops back into the photo.

The crop follows the FFHQ dataset's alignment recipe from the eye centres and mouth corners an
aligner (``register_aligners``) reports; its geometry is kept (:class:`CropTransform`) so that
:func:`paste_back` and :func:`paste_back_difference` can warp edited crops back at the photo's
full resolution. docs/faces.md describes the aligners, how faces are chosen, and the two
paste-back modes.

Coordinates: points (landmarks, ``AlignedFace.quad``, :meth:`CropTransform.to_photo`) are in
pixel-index coordinates, where the centre of the top-left pixel is ``(0, 0)``, as dlib and
``FaceLandmarks`` give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from .aligners import Aligner, FaceLandmarks
from .errors import EssencekitError
from .images import upright_rgb

#: Faces whose FFHQ square is narrower than this (in photo pixels) are skipped: e4e sees 256 px,
#: and a smaller face would be upsampled more than 2x into a blur the encoder inverts badly.
DEFAULT_MIN_FACE = 128

#: A detection scoring below this fraction of the best one in the same photo is taken as a
#: false positive (dlib fires weakly on the astronaut's mission patch: 0.12 against 1.16).
DEFAULT_MIN_RELATIVE_SCORE = 0.25

#: How far FFHQ supersamples: it renders 4096 px and reduces to 1024.
_MAX_SUPERSAMPLE = 4

# ---------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class CropTransform:
    """How an aligned crop sits in its photo: everything needed to undo the crop.

    ``quad`` holds the photo positions of the crop's corners (top-left, bottom-left,
    bottom-right, top-right) in Pillow's continuous coordinates (the top-left pixel spans
    ``[0, 1]``), exactly what ``Image.transform(..., Image.QUAD, quad)`` takes; ``size`` is the
    crop side it was rendered at and ``photo_size`` the photo's ``(width, height)``. The mapping
    is a similarity (rotation, uniform scale, shift), so any crop size maps to the same quad.
    """

    quad: tuple[tuple[float, float], ...]
    size: int
    photo_size: tuple[int, int]

    def _corners(self) -> np.ndarray:
        return np.asarray(self.quad, dtype=np.float64)

    def crop_to_photo_matrix(self, size: int | None = None) -> np.ndarray:
        """3x3 affine matrix from continuous crop coordinates (a crop of ``size`` px, default the
        rendered size) to continuous photo coordinates."""
        n = float(size or self.size)
        tl, bl, _, tr = self._corners()
        m = np.eye(3)
        m[:2, 0] = (tr - tl) / n
        m[:2, 1] = (bl - tl) / n
        m[:2, 2] = tl
        return m

    def photo_to_crop_matrix(self, size: int | None = None) -> np.ndarray:
        """The inverse of :meth:`crop_to_photo_matrix`."""
        return np.linalg.inv(self.crop_to_photo_matrix(size))

    def to_photo(self, points, size: int | None = None) -> np.ndarray:
        """Crop pixel coordinates -> photo pixel coordinates (both pixel-index, ``[N, 2]``)."""
        return _apply(self.crop_to_photo_matrix(size), points)

    def to_crop(self, points, size: int | None = None) -> np.ndarray:
        """Photo pixel coordinates -> crop pixel coordinates (both pixel-index, ``[N, 2]``)."""
        return _apply(self.photo_to_crop_matrix(size), points)

    @property
    def face_size(self) -> float:
        """The side of the FFHQ square in photo pixels."""
        tl, _, _, tr = self._corners()
        return float(np.hypot(*(tr - tl)))

    def to_dict(self) -> dict:
        """A JSON-friendly form (for metadata such as ``essencekit invert``'s)."""
        return {"quad": [list(p) for p in self.quad], "size": self.size, "photo_size": list(self.photo_size)}

    @classmethod
    def from_dict(cls, data: dict) -> CropTransform:
        return cls(tuple(tuple(float(v) for v in p) for p in data["quad"]), int(data["size"]), tuple(data["photo_size"]))


def _apply(matrix: np.ndarray, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5
    out = pts @ matrix[:2, :2].T + matrix[:2, 2]
    return out - 0.5


def ffhq_quad(landmarks: FaceLandmarks) -> tuple[np.ndarray, float]:
    """FFHQ's oriented square from eye centres and mouth corners: ``(quad [4, 2], side)``, in
    pixel-index coordinates, corners top-left, bottom-left, bottom-right, top-right."""
    eye_left = np.asarray(landmarks.eye_left, dtype=np.float64)
    eye_right = np.asarray(landmarks.eye_right, dtype=np.float64)
    mouth_avg = (np.asarray(landmarks.mouth_left, dtype=np.float64) + np.asarray(landmarks.mouth_right, dtype=np.float64)) / 2
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    # the crop's x axis averages the eye line with the eye-mouth line turned by -90 degrees,
    # so a tilted head is levelled by both cues
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("degenerate face landmarks (eyes and mouth coincide)")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, float(np.hypot(*x) * 2)


def _render(image: Image.Image, quad: np.ndarray, qsize: float, output_size: int) -> tuple[Image.Image, np.ndarray]:
    """The FFHQ crop: shrink, crop, pad with blur and median colour, QUAD-transform, reduce.

    Returns the crop and the quad it shows in photo continuous coordinates (which differs from
    ``quad + 0.5`` by the rounding of the shrunk photo's size, a fraction of a pixel)."""
    width, height = image.size
    quad = quad.copy()

    # Shrink: integer factor, as FFHQ, so that very large faces are not sampled point-wise.
    shrink = int(math.floor(qsize / output_size * 0.5))
    scale = np.array([1.0, 1.0])
    src_w, src_h = width, height
    if shrink > 1:
        src_w, src_h = int(np.rint(width / shrink)), int(np.rint(height / shrink))
        scale = np.array([width / src_w, height / src_h])
        quad /= shrink
        qsize /= shrink

    # Crop around the quad plus a border; done before any resampling so a 50 MP photo costs
    # only its face region (Pillow's resize with a box gives the same pixels as resizing all).
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        max(int(np.floor(quad[:, 0].min())) - border, 0),
        max(int(np.floor(quad[:, 1].min())) - border, 0),
        min(int(np.ceil(quad[:, 0].max())) + border, src_w),
        min(int(np.ceil(quad[:, 1].max())) + border, src_h),
    )
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError("the face lies outside the photo")
    if shrink > 1:
        box = (crop[0] * scale[0], crop[1] * scale[1], crop[2] * scale[0], crop[3] * scale[1])
        img = image.resize((crop[2] - crop[0], crop[3] - crop[1]), Image.LANCZOS, box=box)
    else:
        img = image.crop(crop)
    quad -= crop[:2]

    # Pad where the quad leaves the photo: mirror the photo, blur the mirrored part and fade it
    # to the median colour, so the encoder never sees hard black edges.
    pad = (
        max(-int(np.floor(quad[:, 0].min())) + border, 0),
        max(-int(np.floor(quad[:, 1].min())) + border, 0),
        max(int(np.ceil(quad[:, 0].max())) - img.size[0] + border, 0),
        max(int(np.ceil(quad[:, 1].max())) - img.size[1] + border, 0),
    )
    if max(pad) > border - 4:
        pad = tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))
        arr = np.pad(np.asarray(img, dtype=np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        h, w, _ = arr.shape
        yy, xx = np.ogrid[:h, :w]
        xx = xx.astype(np.float32)
        yy = yy.astype(np.float32)
        mask = np.maximum(
            1.0 - np.minimum(xx / pad[0], (w - 1 - xx) / pad[2]),
            1.0 - np.minimum(yy / pad[1], (h - 1 - yy) / pad[3]),
        )[..., None]
        # arr holds integers here, so the 8-bit round trip through Pillow's blur is exact
        blurred = np.asarray(Image.fromarray(arr.astype(np.uint8)).filter(ImageFilter.GaussianBlur(qsize * 0.02)), dtype=np.float32)
        arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]
    else:
        pad = (0, 0, 0, 0)  # FFHQ leaves small overhangs to the transform's black fill

    # FFHQ renders 4x and reduces with Lanczos so that a face larger than the output is not
    # aliased; a face smaller than the output has nothing to alias, so the supersampling stops
    # at the face's own resolution (same geometry; 4096 px costs 2 s a face on a laptop CPU).
    factor = int(min(_MAX_SUPERSAMPLE, max(1, math.ceil(qsize / output_size))))
    transform_size = output_size * factor
    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten().tolist(), Image.BILINEAR)
    if transform_size > output_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)

    shown = (quad + 0.5 - np.array(pad[:2]) + np.array(crop[:2])) * scale
    return img, shown


# ---------------------------------------------------------------------------------------------
# results


@dataclass(eq=False)  # holds arrays and images: compare faces by identity
class AlignedFace:
    """One face of a photo, cropped as FFHQ aligns its faces.

    ``crop`` is the RGB ``output_size`` square; ``landmarks`` what the aligner found;
    ``quad`` the crop's corners in the photo (pixel-index coordinates, ``[4, 2]``: top-left,
    bottom-left, bottom-right, top-right of the crop); ``transform`` the geometry
    :func:`paste_back` undoes; ``index`` its rank in the photo (0 = largest); ``size`` the side of
    the FFHQ square in photo pixels; ``aligner`` the aligner's name.
    """

    crop: Image.Image
    landmarks: FaceLandmarks
    quad: np.ndarray
    transform: CropTransform
    index: int = 0
    size: float = 0.0
    aligner: str = ""

    def crop_tensor(self, size: int = 256):
        """The crop as the encoder takes it: ``[1, 3, size, size]`` float32 in ``[-1, 1]``.

        Resized with Pillow's (antialiased) bilinear filter, the ``transforms.Resize`` e4e
        was trained with on FFHQ's 1024 px images."""
        import torch

        img = self.crop if self.crop.size == (size, size) else self.crop.resize((size, size), Image.BILINEAR)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
        return (arr.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0).contiguous()


@dataclass(frozen=True)
class RejectedFace:
    """A detection that was not aligned: ``reason`` (``"too-small"`` or ``"low-confidence"``),
    ``message`` (one line for the user), ``landmarks`` and ``size`` (FFHQ square side, px)."""

    landmarks: FaceLandmarks
    reason: str
    message: str
    size: float


class AlignedFaces(list):
    """The list :func:`align_faces` returns: the aligned faces, plus ``rejected``, the
    detections that were skipped and why (so a caller can say "face too small: 90 px")."""

    def __init__(self, faces=(), rejected=(), aligner: str = ""):
        super().__init__(faces)
        self.rejected: list[RejectedFace] = list(rejected)
        self.aligner = aligner


# ---------------------------------------------------------------------------------------------
# aligners


def available_aligners() -> dict[str, Aligner]:
    """The registered aligners, by name, in plugin order."""
    from .plugins import registered

    return dict(registered("aligners"))


def get_aligner(aligner: str | Aligner | None = None) -> Aligner:
    """The aligner ``align_faces`` would use: the named one, else the usable one with the
    highest ``priority`` (dlib among the built-ins). Raises :class:`EssencekitError` with the
    pip command when none is."""
    if isinstance(aligner, Aligner):
        return aligner
    registry = available_aligners()
    if aligner is not None:
        if aligner not in registry:
            known = ", ".join(registry) or "none"
            raise EssencekitError(f"unknown face aligner {aligner!r} (registered: {known})")
        chosen = registry[aligner]
        ok, reason = chosen.availability()
        if not ok:
            raise EssencekitError(f"face aligner {aligner!r} is not usable: {reason}")
        return chosen
    ranked = sorted(registry.values(), key=lambda candidate: -candidate.priority)  # ties: plugin order
    reasons = []
    for candidate in ranked:
        ok, reason = candidate.availability()
        if ok:
            return candidate
        reasons.append(f"{candidate.name}: {reason}")
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    hints = [candidate.install_hint for candidate in ranked if candidate.install_hint]
    fix = f"; install the default one: {hints[0]}" if hints else ""
    fix += f"  (or: {'; '.join(hints[1:])})" if len(hints) > 1 else ""
    raise EssencekitError(f"no face aligner is installed{detail}{fix}")


def align_faces(
    image: Image.Image,
    *,
    aligner: str | Aligner | None = None,
    which: str = "largest",
    output_size: int = 1024,
    min_face: int = DEFAULT_MIN_FACE,
    min_relative_score: float = DEFAULT_MIN_RELATIVE_SCORE,
) -> AlignedFaces:
    """Find the faces in a photo and crop each as FFHQ does.

    The photo is used upright: an EXIF orientation tag (a PIL image straight from
    ``Image.open()`` keeps it) is applied first, as :func:`essencekit.images.read_image` does, so
    landmarks, quads and ``transform.photo_size`` are in the upright photo's coordinates.
    ``which``: ``"largest"`` (at most one face: the largest confident one) or ``"all"``
    (every confident face large enough, largest first). Faces are ranked by the size of their
    FFHQ square, after dropping detections scoring below ``min_relative_score`` times the
    photo's best score; ``index`` is that rank, the same in both modes. A face whose square is
    narrower than ``min_face`` photo pixels is not aligned. Skipped detections are listed in
    the result's ``rejected``; no face gives an empty list.
    """
    if which not in ("largest", "all"):
        raise ValueError(f"which must be 'largest' or 'all', not {which!r}")
    if output_size < 8:
        raise ValueError(f"output_size must be at least 8, not {output_size}")
    chosen = get_aligner(aligner)
    image = _photo_rgb(image)
    detections = list(chosen.detect(image))

    best = max((d.score for d in detections), default=0.0)
    candidates, rejected = [], []
    for det in detections:
        try:
            quad, qsize = ffhq_quad(det)
        except ValueError:
            continue
        if best > 0 and det.score < min_relative_score * best:
            rejected.append(
                RejectedFace(det, "low-confidence", f"a face-like detection scored {det.score:.2f}, far below the photo's best face ({best:.2f}); ignored as a likely false positive", qsize)
            )
            continue
        candidates.append((det, quad, qsize))
    candidates.sort(key=lambda c: (-c[2], -c[0].score))

    faces = []
    for det, quad, qsize in candidates:
        if qsize < min_face:
            rejected.append(
                RejectedFace(det, "too-small", f"face too small to invert: {qsize:.0f} px across (FFHQ square), needs at least {min_face} px", qsize)
            )
            continue
        if which == "largest" and faces:
            continue
        try:
            crop, shown = _render(image, quad, qsize, output_size)
        except ValueError:
            continue
        transform = CropTransform(tuple(tuple(float(v) for v in p) for p in shown), output_size, image.size)
        faces.append(AlignedFace(crop, det, shown - 0.5, transform, index=len(faces), size=qsize, aligner=chosen.name))
    return AlignedFaces(faces, rejected, chosen.name)


def align_face(image: Image.Image, landmarks: FaceLandmarks, *, output_size: int = 1024) -> AlignedFace:
    """Crop one face from known landmarks (no detection, no size check)."""
    image = _photo_rgb(image)
    quad, qsize = ffhq_quad(landmarks)
    crop, shown = _render(image, quad, qsize, output_size)
    transform = CropTransform(tuple(tuple(float(v) for v in p) for p in shown), output_size, image.size)
    return AlignedFace(crop, landmarks, shown - 0.5, transform, size=qsize)


def face_from_aligned_crop(image: Image.Image, *, output_size: int = 1024) -> AlignedFace:
    """Treat an image that is already an FFHQ-aligned crop as one face (``--no-align``): the crop
    is the image resized to ``output_size``, and pasting back covers the whole image."""
    image = _photo_rgb(image)
    w, h = image.size
    crop = image if image.size == (output_size, output_size) else image.resize((output_size, output_size), Image.LANCZOS)
    shown = np.array([[0.0, 0.0], [0.0, h], [w, h], [w, 0.0]])
    transform = CropTransform(tuple(tuple(p) for p in shown.tolist()), output_size, (w, h))
    # the canonical FFHQ points of an aligned crop, for callers that want landmarks anyway
    lm = FaceLandmarks(
        eye_left=(0.375 * w, 0.48 * h), eye_right=(0.625 * w, 0.48 * h),
        mouth_left=(0.4 * w, 0.72 * h), mouth_right=(0.6 * w, 0.72 * h),
        box=(0.0, 0.0, float(w), float(h)),
    )
    return AlignedFace(crop, lm, shown - 0.5, transform, size=float(max(w, h)), aligner="none")


# ---------------------------------------------------------------------------------------------
# paste back


def _feather_mask(size: int, feather: float) -> np.ndarray:
    """1 inside the crop, falling smoothly to 0 at its edges over ``feather`` of its side."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(centres, size - centres)
    width = feather * size
    ramp = np.ones(size) if width <= 0 else np.clip((edge - 0.5) / width, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible kink where the fade starts
    return np.outer(ramp, ramp).astype(np.float32)


def _photo_rgb(image: Image.Image) -> Image.Image:
    """The photo as it is meant to be seen, in RGB: a PIL image straight from ``Image.open()``
    still carries its EXIF orientation tag, which ``read_image`` (the CLI's reader) applies;
    applying it here too makes the API find the same faces, and paste back into the same frame."""
    return upright_rgb(image)


def _as_float_rgb(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32)


@dataclass
class _Warp:
    """One face's crop-space data, warped into its bounding box in the photo."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    layers: list[np.ndarray] = field(default_factory=list)


def _warp_to_photo(face: AlignedFace, layers: list[np.ndarray], feather: float, mask: Image.Image | None, photo_size) -> _Warp | None:
    t = face.transform
    if tuple(t.photo_size) != tuple(photo_size):
        raise EssencekitError(
            f"the photo is {photo_size[0]}x{photo_size[1]} but face {face.index} was aligned on a "
            f"{t.photo_size[0]}x{t.photo_size[1]} image; paste back into the photo it was cropped from"
        )
    corners = np.asarray(t.quad)
    x0 = max(int(np.floor(corners[:, 0].min())), 0)
    y0 = max(int(np.floor(corners[:, 1].min())), 0)
    x1 = min(int(np.ceil(corners[:, 0].max())), photo_size[0])
    y1 = min(int(np.ceil(corners[:, 1].max())), photo_size[1])
    if x1 <= x0 or y1 <= y0:
        return None

    size = layers[0].shape[0]
    # a crop much larger than the face would alias when point-sampled: reduce it first (with
    # Lanczos) to about the face's size in the photo, then warp with a bicubic filter
    target = int(math.ceil(t.face_size)) + 2
    work = size
    if target < size:
        work = target
        layers = [np.stack([_resize_f(layer[..., c], work) for c in range(layer.shape[-1])], axis=-1) for layer in layers]

    if mask is None:
        mask_arr = np.ones((work, work), np.float32)
    else:
        mask_arr = _resize_f(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0, work)
    mask_arr = np.clip(mask_arr, 0.0, 1.0) * _feather_mask(work, feather)

    # output pixel (continuous, box-relative) -> crop continuous coordinates
    to_crop = t.photo_to_crop_matrix(work) @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    coeffs = tuple(to_crop[:2].flatten().tolist())
    out_size = (x1 - x0, y1 - y0)

    def warp(channel: np.ndarray, resample) -> np.ndarray:
        img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), "F")
        return np.asarray(img.transform(out_size, Image.AFFINE, coeffs, resample), dtype=np.float32)

    warped_mask = np.clip(warp(mask_arr, Image.BILINEAR), 0.0, 1.0)
    warped = [np.stack([warp(layer[..., c], Image.BICUBIC) for c in range(layer.shape[-1])], axis=-1) for layer in layers]
    return _Warp((x0, y0, x1, y1), warped_mask, warped)


def _resize_f(channel: np.ndarray, size: int) -> np.ndarray:
    if channel.shape == (size, size):
        return channel
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), "F")
    return np.asarray(img.resize((size, size), Image.LANCZOS), dtype=np.float32)


def _check_lists(faces, *lists) -> None:
    for items in lists:
        if len(items) != len(faces):
            raise ValueError(f"got {len(faces)} faces but {len(items)} crops")


def _masks(masks, faces):
    if masks is None:
        return [None] * len(faces)
    _check_lists(faces, masks)
    return masks


def paste_back(
    photo: Image.Image,
    faces: list[AlignedFace],
    edited_crops: list[Image.Image],
    *,
    feather: float = 0.1,
    masks: list[Image.Image | None] | None = None,
) -> Image.Image:
    """Warp each edited crop back into the photo, at the photo's resolution: the edited face
    replaces the photo inside its FFHQ square, faded out over the outer ``feather`` (a fraction
    of the square's side) so no seam shows. Every face goes into one output; pixels outside the
    squares are the photo's, bit for bit. ``masks`` (optional, one ``L`` image per face in crop
    space, any size, white = edit) restricts the edit further. Returns a new RGB image."""
    _check_lists(faces, edited_crops)
    photo = _photo_rgb(photo)
    out = np.array(photo, dtype=np.uint8)
    for face, edited, mask in zip(faces, edited_crops, _masks(masks, faces)):
        w = _warp_to_photo(face, [_square(edited)], feather, mask, photo.size)
        if w is None:
            continue
        x0, y0, x1, y1 = w.box
        region = out[y0:y1, x0:x1].astype(np.float32)
        m = w.mask[..., None]
        blended = region * (1.0 - m) + w.layers[0] * m
        out[y0:y1, x0:x1] = np.rint(np.clip(blended, 0, 255)).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def paste_back_difference(
    photo: Image.Image,
    faces: list[AlignedFace],
    edited_crops: list[Image.Image],
    reconstructed_crops: list[Image.Image],
    *,
    feather: float = 0.1,
    masks: list[Image.Image | None] | None = None,
) -> Image.Image:
    """Add what the edit changed (edited crop minus the unedited reconstruction) to the photo,
    warped and feathered as in :func:`paste_back`. The photo's own detail stays wherever the
    edit changes nothing, so strength 0 (edit == reconstruction) returns the photo unchanged,
    bit for bit, everywhere."""
    _check_lists(faces, edited_crops, reconstructed_crops)
    photo = _photo_rgb(photo)
    out = np.array(photo, dtype=np.uint8)
    for face, edited, recon, mask in zip(faces, edited_crops, reconstructed_crops, _masks(masks, faces)):
        edited_arr = _square(edited)
        recon_arr = _square(recon, edited_arr.shape[0])
        w = _warp_to_photo(face, [edited_arr - recon_arr], feather, mask, photo.size)
        if w is None:
            continue
        x0, y0, x1, y1 = w.box
        region = out[y0:y1, x0:x1].astype(np.float32)
        region += w.layers[0] * w.mask[..., None]
        out[y0:y1, x0:x1] = np.rint(np.clip(region, 0, 255)).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _square(image: Image.Image, size: int | None = None) -> np.ndarray:
    if image.size[0] != image.size[1]:
        raise ValueError(f"edited crops must be square, got {image.size[0]}x{image.size[1]}")
    if size is not None and image.size[0] != size:
        image = image.resize((size, size), Image.LANCZOS)
    return _as_float_rgb(image)
