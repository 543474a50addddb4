"""Where a run's time goes: named sections of the per-photo path, timed when asked.

A :class:`~essencekit.transfers.pipeline.Pipeline` reports its stages (decode, detect, align,
encode, synthesise, paste, write) to its ``timings``; the default, :data:`OFF`, costs nothing.
A benchmark sets a :class:`Timings` on ``run.pipeline`` before iterating the run and reads
:attr:`Timings.seconds` after.

Sections nest: a section's time excludes the sections opened inside it (the aligner's detection
inside the alignment), so the figures add up to the time spent in sections. Readers and writers
may run on background threads: each thread keeps its own stack of open sections.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from ..aligners import Aligner

#: The sections a run reports, in the order a photo goes through them.
SECTIONS = ("decode", "detect", "align", "encode", "synthesise", "paste", "write")


class Timings:
    """Seconds and calls per section, summed over a run (over every thread that ran one).

    ``seconds`` is wall time; ``cpu_seconds`` the CPU time of the thread that ran the section,
    which is all of its work when torch computes on that thread alone (``torch.set_num_threads(1)``)
    and, unlike wall time, does not grow when other jobs share the machine."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        stack = self._local.__dict__.setdefault("stack", [])
        # [name, wall and CPU time spent in sections nested inside it]
        frame = [name, 0.0, 0.0]
        stack.append(frame)
        start, cpu_start = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
            stack.pop()
            if stack:
                stack[-1][1] += elapsed
                stack[-1][2] += cpu
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - frame[1]
                self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu - frame[2]
                self.calls[name] = self.calls.get(name, 0) + 1


class _Off:
    """The default: sections that time nothing."""

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        yield


OFF = _Off()


class TimedAligner(Aligner):
    """``aligner`` (an :class:`~essencekit.aligners.Aligner`) whose detection counts as the
    ``detect`` section of ``timings``."""

    def __init__(self, aligner: Aligner, timings) -> None:
        self.aligner = aligner
        self.timings = timings
        self.name, self.description, self.priority = aligner.name, aligner.description, aligner.priority

    def availability(self):
        return self.aligner.availability()

    def detect(self, image):
        with self.timings.section("detect"):
            return self.aligner.detect(image)
