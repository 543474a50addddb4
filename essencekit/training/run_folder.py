"""A training run's folder: its checkpoints, its metrics log and its validation samples.

::

    run/
      best.pt             the weights with the lowest validation loss (extraction reads this)
      last.pt             the latest weights with the optimiser state: what --resume RUN_DIR continues
      step-000500.pt      the weights every checkpoint_every steps
      metrics.jsonl       one JSON object per logged step and per validation
      samples/val-000500.png   validation sample grids (targets x sources)

Every file is written atomically, so Ctrl-C or a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path, check_output_file
from ..errors import EssencekitError, OptionError, braced

BEST, LAST, METRICS, SAMPLES = "best.pt", "last.pt", "metrics.jsonl", "samples"


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    def periodic(self, step: int) -> Path:
        return self.path / f"step-{step:06d}.pt"

    def sample_grid(self, step: int) -> Path:
        return self.path / SAMPLES / f"val-{step:06d}.png"

    def check_new(self) -> None:
        """Refuse to start a new run over an existing one (nothing is overwritten)."""
        if self.path.exists() and not self.path.is_dir():
            raise OptionError(f"the run folder {self.path} is a file; choose a folder", parameter="output")
        if self.best.exists() or self.last.exists():
            raise OptionError(
                f"{braced(str(self.path))} already holds a training run; continue it with {{resume}}, or choose another "
                "folder", parameter="output", mentions=("resume",),
            )
        # checked now, made when the first file is written: a run refused later (no usable
        # photo, missing weights) leaves no empty folder behind
        check_output_file(self.last, parameter="output")

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def check_resumable(self) -> Path:
        if not self.last.is_file():
            raise EssencekitError(
                f"cannot resume from {self.path}: it has no {LAST} (start a new run, or give the folder of one "
                "that was stopped)"
            )
        return self.last

    # -- the metrics log --------------------------------------------------------------------

    def log(self, record: dict) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return rows

    def truncate_log(self, step: int) -> None:
        """Drop what was logged after ``step`` (the steps a resumed run will do again), so the
        log holds each step once."""
        kept = [row for row in self.records() if int(row.get("step", 0)) <= step]
        with atomic_path(self.path / METRICS) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
