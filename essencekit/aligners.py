"""What a face aligner is: the object ``register_aligners`` plugins register.

An aligner finds faces in a photo and returns, for each, the four points the FFHQ alignment
is computed from (eye centres and mouth corners), in the photo's pixel coordinates. The crop
itself is essencekit's job, so every aligner yields the same FFHQ geometry.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class FaceLandmarks:
    """One detected face: FFHQ alignment points, its box (left, top, right, bottom), a score."""

    eye_left: Point
    eye_right: Point
    mouth_left: Point
    mouth_right: Point
    box: tuple[float, float, float, float]
    score: float = 1.0


class Aligner(abc.ABC):
    """A face detector plus landmark model. Subclass it and register an instance.

    ``priority`` orders the automatic choice: the usable aligner with the highest priority is
    the default (the built-ins: dlib 10, mediapipe 0). ``install_hint`` says how to make it
    usable (a pip command); the default's is shown when no aligner is usable.
    """

    name: str = ""
    description: str = ""
    priority: int = 0
    install_hint: str = ""

    def availability(self) -> tuple[bool, str]:
        """``(True, "")`` when usable here, else ``(False, reason the user can act on)``."""
        return True, ""

    @abc.abstractmethod
    def detect(self, image) -> list[FaceLandmarks]:
        """Find the faces in an RGB ``PIL.Image``; an empty list when there is none."""
