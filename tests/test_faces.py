"""Faces: FFHQ alignment geometry, choosing faces, the aligners, and pasting edits back.

Detection tests use scikit-image's astronaut photo (a real face photo shipped in a package) and
skip when dlib, mediapipe or scikit-image are not installed; the geometry and paste-back tests
need none of them.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

import essencekit
from essencekit import EssencekitError, FaceLandmarks, faces
from essencekit.faces import (
    AlignedFace,
    CropTransform,
    align_face,
    align_faces,
    ffhq_quad,
    paste_back,
    paste_back_difference,
)

N = 1024

# what dlib finds on the astronaut (rounded): lets the paste-back tests run without dlib
ASTRONAUT_LANDMARKS = FaceLandmarks(
    eye_left=(203.17, 101.5), eye_right=(246.5, 104.17), mouth_left=(201.0, 139.0), mouth_right=(246.0, 141.0), box=(175, 76, 266, 167), score=1.16
)


def _aligner_usable(name: str) -> bool:
    from essencekit_builtins.aligners import DlibAligner, MediaPipeAligner

    return {"dlib": DlibAligner, "mediapipe": MediaPipeAligner}[name]().availability()[0]


needs_dlib = pytest.mark.skipif(not _aligner_usable("dlib"), reason="dlib-bin and face-recognition-models are not installed")
needs_mediapipe = pytest.mark.skipif(not _aligner_usable("mediapipe"), reason="mediapipe 0.10.14 is not installed")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def astronaut_face(astronaut) -> AlignedFace:
    return align_face(astronaut, ASTRONAUT_LANDMARKS)


@pytest.fixture(scope="module")
def two_astronauts(astronaut) -> Image.Image:
    """The astronaut twice, the right copy 1.25x larger, on a white canvas."""
    canvas = Image.new("RGB", (512 + 640, 640), (255, 255, 255))
    canvas.paste(astronaut, (0, 64))
    canvas.paste(astronaut.resize((640, 640), Image.LANCZOS), (512, 0))
    return canvas


def _rotate(points, angle, scale, shift):
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s], [s, c]]) * scale
    return [tuple((m @ np.asarray(p, float) + shift).tolist()) for p in points]


def _landmarks(points, box=(0, 0, 1, 1), score=1.0):
    return FaceLandmarks(eye_left=points[0], eye_right=points[1], mouth_left=points[2], mouth_right=points[3], box=box, score=score)


def _canonical_eyes(e2e: float, e2m: float, size: int = N) -> tuple[float, float, float]:
    """Where the FFHQ recipe puts the eyes of an upright symmetric face, in crop pixel-index
    coordinates: ``(x_left, x_right, y)``. The square's half-side is max(2|e2e|, 1.8|e2m|)
    and its centre is 0.1 e2m below the eye midpoint."""
    half = max(2 * e2e, 1.8 * e2m)
    unit = size / (2 * half)
    y = size / 2 - 0.1 * e2m * unit
    return size / 2 - e2e / 2 * unit - 0.5, size / 2 + e2e / 2 * unit - 0.5, y - 0.5


# ---------------------------------------------------------------------------------------------
# geometry (no detector needed)


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (math.radians(30), 1.7), (math.radians(-50), 0.6)])
def test_quad_maps_the_eyes_to_ffhqs_canonical_positions(angle, scale):
    # an upright face: eyes 100 px apart, mouth 90 px below them (the eye-distance branch)
    upright = [(-50.0, 0.0), (50.0, 0.0), (-40.0, 90.0), (40.0, 90.0)]
    points = _rotate(upright, angle, scale, np.array([400.0, 380.0]))
    quad, qsize = ffhq_quad(_landmarks(points))
    assert qsize == pytest.approx(400 * scale)
    sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
    assert np.allclose(sides, qsize)  # a square
    transform = CropTransform(tuple(map(tuple, quad + 0.5)), N, (800, 800))
    got = transform.to_crop(points)
    x_left, x_right, y = _canonical_eyes(100, 90)
    assert (x_left, x_right) == pytest.approx((383.5, 639.5))  # eyes a quarter of the crop apart
    assert got[0] == pytest.approx([x_left, y], abs=1e-6)
    assert got[1] == pytest.approx([x_right, y], abs=1e-6)
    assert transform.to_photo(got) == pytest.approx(np.asarray(points), abs=1e-6)


def test_mouth_dominant_face_puts_the_eye_midpoint_at_0_472():
    # eyes close together, mouth far: the square is sized by 1.8 |e2m|, and the eye midpoint
    # lands at N/2 - N/36 whatever the face's size
    quad, _ = ffhq_quad(_landmarks([(80, 50), (120, 50), (85, 150), (115, 150)]))
    transform = CropTransform(tuple(map(tuple, quad + 0.5)), N, (200, 200))
    mid = transform.to_crop([(100, 50)])[0]
    assert mid == pytest.approx([N / 2 - 0.5, N / 2 - N / 36 - 0.5], abs=1e-6)


def _blob_image(size, points, radius):
    yy, xx = np.mgrid[:size[1], :size[0]].astype(np.float32)
    img = np.full((size[1], size[0]), 40.0, np.float32)
    for x, y in points:
        img += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB")


def _blob_centre(crop: Image.Image, near, window):
    arr = np.asarray(crop, np.float32)[..., 0] - 40
    x0, y0 = int(near[0] - window), int(near[1] - window)
    patch = np.clip(arr[y0 : y0 + 2 * window, x0 : x0 + 2 * window], 0, None)
    patch = np.where(patch > patch.max() * 0.5, patch, 0)
    yy, xx = np.mgrid[: patch.shape[0], : patch.shape[1]]
    return np.array([(xx * patch).sum() / patch.sum() + x0, (yy * patch).sum() / patch.sum() + y0])


@pytest.mark.parametrize(
    "photo_size, centre, scale, output_size",
    [
        ((600, 500), (300, 240), 1.0, 256),  # plain crop, supersampled
        ((2600, 2600), (1300, 1300), 12.0, 256),  # a huge face: the shrink path
        ((420, 300), (90, 70), 1.0, 256),  # near the corner: the reflect-pad path
        ((400, 400), (200, 180), 0.5, 512),  # a face smaller than the output: upsampled
    ],
)
def test_the_crop_shows_what_the_transform_says(photo_size, centre, scale, output_size):
    upright = [(-25.0, 0.0), (25.0, 0.0), (-20.0, 45.0), (20.0, 45.0)]
    points = _rotate(upright, math.radians(20), scale, np.asarray(centre, float))
    photo = _blob_image(photo_size, points, radius=3 * scale)
    face = align_face(photo, _landmarks(points), output_size=output_size)
    assert face.crop.size == (output_size, output_size) and face.crop.mode == "RGB"
    expected = face.transform.to_crop(points)
    for where in expected:
        window = max(6, int(output_size * 0.03))
        assert np.abs(_blob_centre(face.crop, where, window) - where).max() < 1.0
    assert np.allclose(face.quad + 0.5, np.asarray(face.transform.quad))
    assert face.transform.face_size == pytest.approx(face.size, rel=0.01)


def test_padding_fades_to_the_median_colour(astronaut):
    # a face at the very corner: FFHQ mirrors the photo out there and fades it to its median
    points = [(20.0, 30.0), (60.0, 30.0), (24.0, 70.0), (56.0, 70.0)]
    face = align_face(astronaut, _landmarks(points), output_size=256)
    corner = np.asarray(face.crop, np.float32)[:8, :8].reshape(-1, 3).mean(axis=0)
    assert np.isfinite(corner).all() and corner.min() > 5  # no black border


def test_transform_serialises():
    t = CropTransform(((1.5, 2.0), (1.0, 10.0), (9.0, 10.5), (9.5, 2.5)), 256, (40, 30))
    assert CropTransform.from_dict(t.to_dict()) == t
    assert t.to_crop(t.to_photo([[10, 20]])) == pytest.approx(np.array([[10, 20]]))
    # any crop size maps onto the same quad
    assert t.to_photo([[511.5, 511.5]], size=1024) == pytest.approx(t.to_photo([[127.5, 127.5]]))


def test_crop_tensor(astronaut_face):
    torch = pytest.importorskip("torch")
    x = astronaut_face.crop_tensor()
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    expected = np.asarray(astronaut_face.crop.resize((256, 256), Image.BILINEAR), np.float32) / 127.5 - 1
    assert np.allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert astronaut_face.crop_tensor(64).shape == (1, 3, 64, 64)


# ---------------------------------------------------------------------------------------------
# choosing faces (a scripted aligner, no detector needed)


class Scripted(essencekit.Aligner):
    name = "scripted"

    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return list(self.detections)


def _face_at(cx, cy, eye_distance, score):
    h = eye_distance / 2
    pts = [(cx - h, cy), (cx + h, cy), (cx - 0.8 * h, cy + 0.9 * eye_distance), (cx + 0.8 * h, cy + 0.9 * eye_distance)]
    return _landmarks(pts, box=(cx - 2 * h, cy - 2 * h, cx + 2 * h, cy + 3 * h), score=score)


def test_faces_are_ranked_by_size_and_weak_or_small_ones_rejected():
    photo = Image.new("RGB", (1200, 800), (90, 90, 90))
    medium = _face_at(300, 300, 60, score=1.0)  # square 240 px
    large_weak = _face_at(800, 300, 90, score=0.1)  # 360 px, but 0.1 < 0.25 x best
    large = _face_at(800, 600, 80, score=0.8)  # 320 px
    tiny = _face_at(100, 700, 20, score=2.0)  # 80 px: too small to invert
    aligner = Scripted([medium, large_weak, tiny, large])  # the detector's own order means nothing

    found = align_faces(photo, aligner=aligner, which="all", output_size=64)
    assert [f.landmarks for f in found] == [large, medium]
    assert [f.index for f in found] == [0, 1]
    assert [f.size for f in found] == pytest.approx([320, 240])
    assert {r.reason: r.landmarks for r in found.rejected} == {"low-confidence": large_weak, "too-small": tiny}
    small = next(r for r in found.rejected if r.reason == "too-small")
    assert "80 px" in small.message and "128 px" in small.message and "\n" not in small.message
    assert found.aligner == "scripted" and found[0].aligner == "scripted"

    largest = align_faces(photo, aligner=aligner, output_size=64)
    assert len(largest) == 1 and largest[0].landmarks == large and largest[0].index == 0
    assert np.allclose(largest[0].quad, found[0].quad)

    assert len(align_faces(photo, aligner=aligner, which="all", min_face=64, output_size=64)) == 3
    assert align_faces(photo, aligner=Scripted([]), which="all") == []
    with pytest.raises(ValueError):
        align_faces(photo, aligner=aligner, which="first")


class Recording(Scripted):
    """A scripted aligner that keeps the pixels it was shown."""

    name = "recording"

    def detect(self, image):
        self.seen = np.asarray(image).copy()
        return super().detect(image)


def _sideways(tmp_path, upright: Image.Image, suffix: str = ".png", **options):
    """``upright`` stored turned 90 degrees, with EXIF orientation 6 saying how to turn it back,
    as a phone held upright writes it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # shown by rotating the stored pixels 90 degrees clockwise
    path = tmp_path / f"sideways{suffix}"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, **options)
    return path


def test_the_api_applies_exif_orientation_like_the_command_line(tmp_path):
    from essencekit.images import read_image

    rng = np.random.default_rng(3)
    upright = Image.fromarray(rng.integers(0, 256, (600, 400, 3), dtype=np.uint8))  # 400 wide, 600 high
    path = _sideways(tmp_path, upright)
    face = _face_at(200, 250, 60, score=1.0)  # upright coordinates
    aligner = Recording([face])

    with Image.open(path) as opened:
        assert opened.size == (600, 400)  # as stored
        found = align_faces(opened, aligner=aligner, output_size=64)
        assert np.array_equal(aligner.seen, np.asarray(upright))  # the aligner saw the photo upright
        assert found[0].transform.photo_size == (400, 600)
        reference = align_faces(read_image(path), aligner=aligner, output_size=64)  # what the CLI does
        assert np.array_equal(np.asarray(found[0].crop), np.asarray(reference[0].crop))
        assert np.array_equal(found[0].quad, reference[0].quad)
        # pasting back into the photo as opened lands in the upright frame too
        edit = Image.new("RGB", (64, 64), (0, 255, 0))
        pasted = paste_back(opened, found, [edit])
        assert np.array_equal(np.asarray(pasted), np.asarray(paste_back(upright, reference, [edit])))
        one = align_face(opened, face, output_size=64)
        assert np.array_equal(np.asarray(one.crop), np.asarray(reference[0].crop))


@needs_dlib
def test_dlib_finds_a_sideways_phone_photo_through_the_api(tmp_path, astronaut):
    from essencekit.images import read_image

    path = _sideways(tmp_path, astronaut, ".jpg", quality=95)
    with Image.open(path) as opened:
        found = align_faces(opened, aligner="dlib", output_size=256)
    reference = align_faces(read_image(path), aligner="dlib", output_size=256)
    assert len(found) == 1 and len(reference) == 1
    assert np.allclose(found[0].quad, reference[0].quad)
    assert np.array_equal(np.asarray(found[0].crop), np.asarray(reference[0].crop))


def test_no_usable_aligner_names_the_pip_command(monkeypatch):
    from essencekit_builtins import aligners

    monkeypatch.setattr(aligners.DlibAligner, "availability", lambda self: (False, "dlib is not installed"))
    monkeypatch.setattr(aligners.MediaPipeAligner, "availability", lambda self: (False, "mediapipe is not installed"))
    with pytest.raises(EssencekitError, match="pip install dlib-bin face-recognition-models") as caught:
        align_faces(Image.new("RGB", (64, 64)))
    assert "\n" not in str(caught.value)
    with pytest.raises(EssencekitError, match="'mediapipe' is not usable: mediapipe is not installed"):
        faces.get_aligner("mediapipe")
    with pytest.raises(EssencekitError, match="unknown face aligner 'nope'.*dlib, mediapipe"):
        faces.get_aligner("nope")


def test_missing_packages_are_reported_with_the_install_command(monkeypatch):
    from essencekit_builtins import aligners

    monkeypatch.setattr(aligners, "_package_dir", lambda name: None)
    monkeypatch.setattr(aligners.importlib.util, "find_spec", lambda name, *a: None)
    ok, reason = aligners.DlibAligner().availability()
    assert not ok and reason.endswith("pip install dlib-bin face-recognition-models")
    ok, reason = aligners.MediaPipeAligner().availability()
    assert not ok and reason.endswith('pip install "mediapipe==0.10.14"')


def test_aligners_are_registered_and_import_nothing_heavy():
    from essencekit.plugins import owner_of, registered

    assert list(registered("aligners"))[:2] == ["dlib", "mediapipe"]
    assert owner_of("aligners", "dlib") == "essencekit_builtins.aligners"
    code = (
        "import sys, essencekit_builtins.aligners as a;"
        "[x.availability() for x in (a.DlibAligner(), a.MediaPipeAligner())];"
        "print(sorted(m for m in ('dlib', 'mediapipe', 'cv2', 'face_recognition_models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# the real aligners on a real photo


@needs_dlib
def test_dlib_picks_the_astronauts_face_not_her_mission_patch(astronaut):
    aligner = faces.get_aligner("dlib")
    raw = aligner.detect(astronaut)
    # dlib also fires on the patch on her suit (low in the photo): the reference keeps
    # whichever face dlib lists last
    assert any(d.box[1] > 300 for d in raw)
    for which in ("largest", "all"):
        found = align_faces(astronaut, which=which)
        assert len(found) == 1
        box = found[0].landmarks.box
        assert 150 < (box[0] + box[2]) / 2 < 290 and 50 < (box[1] + box[3]) / 2 < 190
        assert found[0].aligner == "dlib"
    assert [r.reason for r in found.rejected] == ["low-confidence"]
    assert found.rejected[0].landmarks.box[1] > 300


@needs_dlib
def test_the_astronauts_eyes_land_where_ffhq_puts_them(astronaut):
    face = align_faces(astronaut)[0]
    assert face.crop.size == (N, N)
    lm = face.landmarks
    e2e = np.hypot(*np.subtract(lm.eye_right, lm.eye_left))
    e2m = np.hypot(*np.subtract(np.add(lm.mouth_left, lm.mouth_right) / 2, np.add(lm.eye_left, lm.eye_right) / 2))
    x_left, x_right, y = _canonical_eyes(e2e, e2m)
    assert (x_left, x_right) == pytest.approx((383.5, 639.5))
    # find the eyes again, in the crop itself (at half size, for speed)
    again = faces.get_aligner("dlib").detect(face.crop.resize((N // 2, N // 2), Image.LANCZOS))
    assert len(again) == 1
    eyes = (np.array([again[0].eye_left, again[0].eye_right]) + 0.5) * 2 - 0.5
    assert np.abs(eyes - [[x_left, y], [x_right, y]]).max() < 4.0


@needs_dlib
def test_several_faces(two_astronauts):
    found = align_faces(two_astronauts, which="all")
    assert len(found) == 2
    assert found[0].size > found[1].size  # the 1.25x copy first
    assert found[0].quad[:, 0].mean() > 512 > found[1].quad[:, 0].mean()
    assert found[0].size / found[1].size == pytest.approx(1.25, rel=0.05)
    largest = align_faces(two_astronauts)
    assert len(largest) == 1 and np.allclose(largest[0].quad, found[0].quad)

    red, blue = Image.new("RGB", (N, N), (255, 0, 0)), Image.new("RGB", (N, N), (0, 0, 255))
    out = np.asarray(paste_back(two_astronauts, list(found), [red, blue]))
    for face, colour in zip(found, ([255, 0, 0], [0, 0, 255])):
        cx, cy = face.transform.to_photo([[N / 2, N / 2]])[0].round().astype(int)
        assert out[cy, cx].tolist() == colour


@needs_dlib
def test_no_face_and_a_face_too_small(astronaut):
    assert align_faces(Image.new("RGB", (320, 240), (128, 128, 128)), which="all") == []
    small = astronaut.resize((256, 256), Image.LANCZOS)
    found = align_faces(small)
    assert found == []
    (rejected,) = [r for r in found.rejected if r.reason == "too-small"]
    assert 75 < rejected.size < 95
    assert f"{rejected.size:.0f} px" in rejected.message
    assert len(align_faces(small, min_face=64)) == 1


@needs_mediapipe
def test_mediapipe_aligns_like_dlib(astronaut, two_astronauts):
    found = align_faces(astronaut, aligner="mediapipe", which="all")
    assert len(found) == 1 and found[0].aligner == "mediapipe"
    quad, size = ffhq_quad(ASTRONAUT_LANDMARKS)
    at_256 = 256 / size
    # the same crop as dlib's to within a few pixels of e4e's 256 px input
    assert np.abs(found[0].quad.mean(axis=0) - quad.mean(axis=0)).max() * at_256 < 2.0
    assert found[0].size / size == pytest.approx(1.0, abs=0.03)
    for name in ("eye_left", "eye_right", "mouth_left", "mouth_right"):
        error = np.subtract(getattr(found[0].landmarks, name), getattr(ASTRONAUT_LANDMARKS, name))
        assert np.abs(error).max() * at_256 < 3.0, name
    # the full-range detector finds faces that fill only part of the photo
    assert len(align_faces(two_astronauts, aligner="mediapipe", which="all")) == 2
    assert align_faces(Image.new("RGB", (320, 240), (128, 128, 128)), aligner="mediapipe") == []


# ---------------------------------------------------------------------------------------------
# paste back


def _crop_coordinates(face: AlignedFace, shape) -> np.ndarray:
    h, w = shape[:2]
    yy, xx = np.mgrid[:h, :w]
    return face.transform.to_crop(np.stack([xx.ravel(), yy.ravel()], axis=1)).reshape(h, w, 2)


def test_unedited_round_trip(astronaut, astronaut_face):
    photo = np.asarray(astronaut, np.int16)
    out = np.asarray(paste_back(astronaut, [astronaut_face], [astronaut_face.crop]), np.int16)
    error = np.abs(out - photo).max(axis=-1)
    box = [int(v) for v in ASTRONAUT_LANDMARKS.box]
    inside = error[box[1] : box[3], box[0] : box[2]]
    # up to 1024 px and back costs about half a pixel of blur, no shift
    assert inside.mean() < 4.0 and np.percentile(inside, 90) < 10
    coords = _crop_coordinates(astronaut_face, photo.shape)
    outside = ~((coords > -1) & (coords < N)).all(axis=-1)
    assert outside.any() and (error[outside] == 0).all()


def test_difference_of_equal_crops_leaves_the_photo_untouched(astronaut, astronaut_face):
    reconstruction = astronaut_face.crop.resize((256, 256), Image.BILINEAR).filter(ImageFilter.BLUR)
    out = paste_back_difference(astronaut, [astronaut_face], [reconstruction], [reconstruction.copy()])
    assert np.array_equal(np.asarray(out), np.asarray(astronaut))


@pytest.mark.parametrize("mode", ["direct", "difference"])
def test_pixels_outside_the_mask_are_bit_exact(astronaut, astronaut_face, mode):
    rng = np.random.default_rng(1)
    edited = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    recon = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    if mode == "direct":
        out = paste_back(astronaut, [astronaut_face], [edited], feather=0.1)
    else:
        out = paste_back_difference(astronaut, [astronaut_face], [edited], [recon], feather=0.1)
    changed = (np.asarray(out) != np.asarray(astronaut)).any(axis=-1)
    coords = _crop_coordinates(astronaut_face, changed.shape) / N
    inside_crop = ((coords > -0.002) & (coords < 1.002)).all(axis=-1)
    assert changed.any()
    assert not changed[~inside_crop].any()
    core = ((coords > 0.3) & (coords < 0.7)).all(axis=-1)
    assert changed[core].mean() > 0.9


def test_direct_and_difference_modes(astronaut, astronaut_face):
    photo = np.asarray(astronaut, np.int16)
    coords = _crop_coordinates(astronaut_face, photo.shape) / N
    core = ((coords > 0.25) & (coords < 0.75)).all(axis=-1)
    edge = ((coords > 0.03) & (coords < 0.05)).any(axis=-1) & ((coords > 0.03) & (coords < 0.97)).all(axis=-1)

    solid = Image.new("RGB", (N, N), (10, 200, 30))
    out = np.asarray(paste_back(astronaut, [astronaut_face], [solid]), np.int16)
    assert (np.abs(out[core] - [10, 200, 30]) <= 1).all()
    assert (np.abs(out[edge] - [10, 200, 30]).max(axis=-1) > 2).mean() > 0.9  # still fading in
    # no seam: at the square's edge the photo is all but untouched
    rim = ((coords > 0.001) & (coords < 0.999)).all(axis=-1) & ((coords < 0.006) | (coords > 0.994)).any(axis=-1)
    moved = np.abs(out[rim] - photo[rim]).sum() / np.abs(photo[rim] - [10, 200, 30]).sum()
    assert rim.sum() > 100 and moved < 0.01

    base = Image.new("RGB", (N, N), (100, 100, 100))
    brighter = Image.new("RGB", (N, N), (130, 100, 90))
    out = np.asarray(paste_back_difference(astronaut, [astronaut_face], [brighter], [base]), np.int16)
    expected = np.clip(photo[core] + [30, 0, -10], 0, 255)
    assert (np.abs(out[core] - expected) <= 1).all()


def test_paste_back_refuses_mismatches(astronaut, astronaut_face):
    with pytest.raises(EssencekitError, match="aligned on a 512x512 image"):
        paste_back(astronaut.resize((300, 300)), [astronaut_face], [astronaut_face.crop])
    with pytest.raises(ValueError, match="1 faces but 2 crops"):
        paste_back(astronaut, [astronaut_face], [astronaut_face.crop] * 2)
    with pytest.raises(ValueError, match="square"):
        paste_back(astronaut, [astronaut_face], [Image.new("RGB", (20, 10))])


def test_masks_restrict_the_edit(astronaut, astronaut_face):
    left_half = Image.new("L", (64, 64), 0)
    left_half.paste(255, (0, 0, 32, 64))
    out = paste_back(astronaut, [astronaut_face], [Image.new("RGB", (N, N), (0, 255, 0))], masks=[left_half])
    changed = (np.asarray(out) != np.asarray(astronaut)).any(axis=-1)
    coords = _crop_coordinates(astronaut_face, changed.shape) / N
    right = ((coords > 0.6) & (coords < 0.95)).all(axis=-1)
    left = (coords[..., 0] > 0.2) & (coords[..., 0] < 0.4) & (coords[..., 1] > 0.3) & (coords[..., 1] < 0.7)
    assert not changed[right].any() and changed[left].all()


def test_already_aligned_crops(astronaut_face):
    crop = astronaut_face.crop.resize((512, 512), Image.LANCZOS)
    face = faces.face_from_aligned_crop(crop)
    assert face.crop.size == (N, N)
    out = paste_back_difference(crop, [face], [face.crop], [face.crop])
    assert np.array_equal(np.asarray(out), np.asarray(crop))
    solid = paste_back(crop, [face], [Image.new("RGB", (N, N), (0, 0, 0))], feather=0)
    assert np.asarray(solid).max() <= 1  # with no feather the whole image is the edit


def test_the_default_aligner_is_the_usable_one_with_the_highest_priority(register_aligner, monkeypatch):
    from essencekit_builtins import aligners

    class Better(essencekit.Aligner):
        name, priority, install_hint = "better", 11, "pip install better"

        def detect(self, image):
            return []

    monkeypatch.setattr(aligners.DlibAligner, "availability", lambda self: (True, ""))
    monkeypatch.setattr(aligners.MediaPipeAligner, "availability", lambda self: (True, ""))
    assert faces.get_aligner().name == "dlib"  # the built-ins' priorities keep today's default
    register_aligner(Better(), "better-aligner")
    assert faces.get_aligner().name == "better"
    # a priority, not a name, makes the default: ranked below mediapipe, dlib is no longer it
    monkeypatch.setattr(Better, "priority", -1)
    monkeypatch.setattr(aligners.DlibAligner, "priority", -2)
    assert faces.get_aligner().name == "mediapipe"
    for cls in (Better, aligners.DlibAligner, aligners.MediaPipeAligner):
        monkeypatch.setattr(cls, "availability", lambda self: (False, "not here"))
    with pytest.raises(EssencekitError, match=r"install the default one: pip install \"mediapipe==.*\(or: pip install better; pip install dlib-bin"):
        faces.get_aligner()
