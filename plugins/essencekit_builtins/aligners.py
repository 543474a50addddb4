"""The built-in face aligners: ``dlib`` (the default, FFHQ's own landmarks) and ``mediapipe``.

Both packages are optional and imported only inside methods, so listing plugins stays fast
and a missing package only makes its aligner report itself unavailable, with the pip command.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import warnings
from pathlib import Path

import essencekit
from essencekit import Aligner, FaceLandmarks

DLIB_INSTALL = "pip install dlib-bin face-recognition-models"
MEDIAPIPE_INSTALL = 'pip install "mediapipe==0.10.14"'
_DLIB_MODEL = "shape_predictor_68_face_landmarks.dat"

# loaded models are shared by every instance (plugins reload in tests; the dlib model takes a
# second to read), and each lock also serialises calls into the native code
_dlib_models = None
_dlib_lock = threading.Lock()
_mediapipe_models = None
_mediapipe_lock = threading.Lock()


def _package_dir(name: str) -> Path | None:
    # find_spec locates a package without running its __init__ (face_recognition_models'
    # imports pkg_resources, which setuptools >= 81 no longer ships)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def dlib_model_path() -> Path | None:
    """The 68-point landmark model that ``face-recognition-models`` ships, if installed."""
    root = _package_dir("face_recognition_models")
    if root is None:
        return None
    path = root / "models" / _DLIB_MODEL
    return path if path.is_file() else None


class DlibAligner(Aligner):
    name = "dlib"
    priority = 10  # the default: FFHQ was aligned with these landmarks
    install_hint = DLIB_INSTALL
    description = (
        "dlib's HOG face detector and 68-point landmarks, the ones FFHQ was aligned with "
        "(landmark model trained on iBUG 300-W: non-commercial use only)"
    )

    def availability(self):
        if importlib.util.find_spec("dlib") is None:
            return False, f"dlib is not installed: {DLIB_INSTALL}"
        if dlib_model_path() is None:
            return False, f"the dlib landmark model ({_DLIB_MODEL}) is not installed: {DLIB_INSTALL}"
        return True, ""

    def _load(self):
        global _dlib_models
        with _dlib_lock:
            if _dlib_models is None:
                ok, reason = self.availability()
                if not ok:
                    raise essencekit.EssencekitError(f"face aligner 'dlib' is not usable: {reason}")
                import dlib

                _dlib_models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_model_path())))
        return _dlib_models

    @staticmethod
    def _detection_plan(width: int, height: int) -> tuple[float, int]:
        """``(scale, upsample)`` for the detector. The HOG detector's window is 80 px; one
        upsampling (as e4e does) finds faces down to 40 px. In big photos a face that small
        is far below anything worth inverting, so the smallest face looked for grows with the
        photo (1/50 of its long side) and the photo is reduced for detection instead: about
        2.5 s for a 12 or 24 MP photo on 2 CPU cores rather than 10 or more. Landmarks are always
        found at full resolution."""
        smallest = max(40.0, max(width, height) / 50.0)
        if smallest < 80.0:
            return 40.0 / smallest, 1
        return 80.0 / smallest, 0

    def detect(self, image):
        import dlib
        import numpy as np
        from PIL import Image

        detector, predictor = self._load()
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        width, height = image.size
        scale, upsample = self._detection_plan(width, height)
        # colour in, as the reference gives it: dlib's own grey conversion decides what it finds
        search = rgb
        if scale < 1.0:
            small = image.convert("RGB").resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
            search = np.ascontiguousarray(np.asarray(small, dtype=np.uint8))
        scale_x, scale_y = search.shape[1] / width, search.shape[0] / height
        with _dlib_lock:
            rects, scores, _ = detector.run(search, upsample, 0.0)

        faces = []
        for rect, score in zip(rects, scores):
            box = (rect.left() / scale_x, rect.top() / scale_y, (rect.right() + 1) / scale_x, (rect.bottom() + 1) / scale_y)
            full = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)
            with _dlib_lock:
                shape = predictor(rgb, full)
            pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
            faces.append(
                FaceLandmarks(
                    eye_left=tuple(pts[36:42].mean(axis=0).tolist()),
                    eye_right=tuple(pts[42:48].mean(axis=0).tolist()),
                    mouth_left=tuple(pts[48].tolist()),
                    mouth_right=tuple(pts[54].tolist()),
                    box=tuple(float(v) for v in box),
                    score=float(score),
                )
            )
        return faces


# MediaPipe face-mesh indices of the six points dlib places around each eye (36-41 and 42-47,
# the same order) and of its outer mouth corners (48 and 54), on the image's left and right
_MP_EYE_LEFT = (33, 160, 158, 133, 153, 144)
_MP_EYE_RIGHT = (362, 385, 387, 263, 373, 380)
_MP_MOUTH_LEFT = 61
_MP_MOUTH_RIGHT = 291


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ start-up logs (TFLite delegate, absl warnings) go straight to file
    descriptor 2, past Python; they would land in the middle of a progress bar."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pytest capture, services)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


class MediaPipeAligner(Aligner):
    name = "mediapipe"
    install_hint = MEDIAPIPE_INSTALL
    description = (
        "MediaPipe full-range face detector and face mesh (Apache-2.0 models shipped in the "
        "wheel): for when dlib cannot be installed"
    )

    def availability(self):
        root = _package_dir("mediapipe")
        if root is None:
            return False, f"mediapipe is not installed: {MEDIAPIPE_INSTALL}"
        # 0.10.30 and later dropped the legacy solutions and their bundled models
        needed = [
            root / "python" / "solutions" / "face_mesh.py",
            root / "modules" / "face_landmark" / "face_landmark_front_cpu.binarypb",
            root / "modules" / "face_detection" / "face_detection_full_range_cpu.binarypb",
        ]
        if not all(path.is_file() for path in needed):
            return False, f"this mediapipe has no bundled face models (0.10.30+ dropped them): {MEDIAPIPE_INSTALL}"
        return True, ""

    def _load(self):
        global _mediapipe_models
        with _mediapipe_lock:
            if _mediapipe_models is None:
                ok, reason = self.availability()
                if not ok:
                    raise essencekit.EssencekitError(f"face aligner 'mediapipe' is not usable: {reason}")
                os.environ.setdefault("GLOG_minloglevel", "2")
                import numpy as np

                with warnings.catch_warnings(), _native_stderr_silenced():
                    warnings.simplefilter("ignore")
                    from mediapipe.python.solutions import face_detection, face_mesh

                    # the face mesh's own detector is short-range (selfies): it misses faces
                    # that fill less than about a fifth of the photo, so faces are found with
                    # the full-range detector and the mesh runs on a crop around each
                    detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
                    mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5)
                    # the graphs start their models (and log about it) from background threads;
                    # one blank frame each waits that out while the log is silenced
                    blank = np.zeros((64, 64, 3), np.uint8)
                    detector.process(blank)
                    mesh.process(blank)
                _mediapipe_models = (detector, mesh)
        return _mediapipe_models

    def detect(self, image):
        import numpy as np
        from PIL import Image

        detector, mesh = self._load()
        rgb_image = image.convert("RGB")
        width, height = rgb_image.size
        with _mediapipe_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protobuf deprecation chatter from mediapipe
            found = detector.process(np.ascontiguousarray(np.asarray(rgb_image, dtype=np.uint8)))
            faces = []
            for det in found.detections or []:
                rel = det.location_data.relative_bounding_box
                box = (rel.xmin * width, rel.ymin * height, (rel.xmin + rel.width) * width, (rel.ymin + rel.height) * height)
                side = 2.0 * max(box[2] - box[0], box[3] - box[1])
                if side < 8:
                    continue
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                x0, y0 = cx - side / 2, cy - side / 2
                # the landmark model works at 192 px: a larger crop only costs time
                work = int(min(round(side), 512))
                crop = rgb_image.transform((work, work), Image.EXTENT, (x0, y0, x0 + side, y0 + side), Image.BILINEAR)
                result = mesh.process(np.ascontiguousarray(np.asarray(crop, dtype=np.uint8)))
                if not result.multi_face_landmarks:
                    continue
                landmarks = result.multi_face_landmarks[0].landmark
                # normalised crop coordinates -> photo pixel indices (dlib's convention)
                pts = np.array([(x0 + p.x * side - 0.5, y0 + p.y * side - 0.5) for p in landmarks], dtype=np.float64)
                faces.append(
                    FaceLandmarks(
                        eye_left=tuple(pts[list(_MP_EYE_LEFT)].mean(axis=0).tolist()),
                        eye_right=tuple(pts[list(_MP_EYE_RIGHT)].mean(axis=0).tolist()),
                        mouth_left=tuple(pts[_MP_MOUTH_LEFT].tolist()),
                        mouth_right=tuple(pts[_MP_MOUTH_RIGHT].tolist()),
                        box=tuple(float(v) for v in box),
                        score=float(det.score[0]),
                    )
                )
        return faces


@essencekit.hookimpl
def register_aligners(register):
    register(DlibAligner())
    register(MediaPipeAligner())
