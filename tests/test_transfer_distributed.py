"""``transfer`` under ``torchrun`` (issue 14): sharded by rank, the same outputs as one process,
one merged summary, and a job that loses a rank completed by a rerun.

The jobs are real: ``python -m torch.distributed.run --standalone`` starts two CPU processes
(gloo) on the tiny e4e fixture, on random "aligned crops" (``--no-align``: no detection).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from essencekit.distributed import Launch
from essencekit.essence import Essence
from essencekit.transfers.pipeline import Result
from essencekit.transfers.sharding import merge, shard_positions

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ["--encoder", str(FIXTURES / "tiny-e4e.pt"), "--backend", "cpu", "--no-align"]
PHOTOS = ("c0.png", "c1.png", "c2.png", "c3.png")

# a rank that dies (SIGKILL) right after finishing its first photo, as an out-of-memory kill would
KILLER = """
import os, signal, sys
from essencekit.transfers import pipeline
if os.environ.get("RANK") == "1":
    finalize = pipeline.Pipeline.finalize
    def finalize_then_die(self, item):
        results = finalize(self, item)
        os.kill(os.getpid(), signal.SIGKILL)
        return results
    pipeline.Pipeline.finalize = finalize_then_die
from essencekit.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job")
    (folder / "photos").mkdir()
    rng = np.random.default_rng(3)
    for name in PHOTOS:
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / "photos" / name)
    direction = torch.randn(10, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    Essence(direction, metadata={"name": "joker"}).save(folder / "joker.pt")
    (folder / "killer.py").write_text(KILLER)
    return folder


def _essencekit(job: Path, args, *, processes: int = 1, home: str = "home", script: str | None = None):
    """Run ``essencekit ARGS`` in ``job`` (one process, or ``processes`` under torchrun), with its
    own W+ cache ``home``."""
    env = {**os.environ, "ESSENCEKIT_HOME": str(job / home), "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    program = [script] if script else ["-m", "essencekit"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(processes), *program]
    else:
        command = [sys.executable, *program]
    return subprocess.run([*command, *map(str, args)], cwd=job, env=env, capture_output=True, text=True,
                          timeout=300)


def _lines(stdout: str, out: str) -> list[dict]:
    """The JSON lines of a run, the output folder named ``OUT``."""
    return [json.loads(line.replace(f"{out}/", "OUT/")) for line in stdout.splitlines() if line.startswith("{")]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _same_pictures(one: Path, other: Path) -> None:
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in other.iterdir())
    for path in one.iterdir():
        # the same backend on another thread count may round a sum differently: one 8-bit level
        assert np.abs(_pixels(path) - _pixels(other / path.name)).max() <= 1, path.name


@pytest.fixture(scope="module")
def single(job):
    """The one-process run everything is compared with."""
    run = _essencekit(job, ["transfer", "photos", "-e", "joker.pt", "-o", "single", "--json", *TINY], home="home1")
    assert run.returncode == 0, run.stderr
    return run


def test_two_processes_write_what_one_writes(job, single):
    run = _essencekit(job, ["transfer", "photos", "-e", "joker.pt", "-o", "two", "--json", *TINY], processes=2,
                      home="home2")
    assert run.returncode == 0, run.stderr
    _same_pictures(job / "single", job / "two")
    # one summary, from rank 0: every result once, in input order, as one process gives them
    assert _lines(run.stdout, "two") == _lines(single.stdout, "single")
    assert run.stderr.count("4 of 4 inputs, 4 faces") == 1
    # a refusal before the work stops every rank and is said once, by rank 0, with the flags
    again = _essencekit(job, ["transfer", "photos", "-e", "joker.pt", "-o", "two", *TINY], processes=2, home="home2")
    assert again.returncode != 0 and again.stderr.count("already exist") == 1
    assert "use --overwrite to replace them" in again.stderr


def test_a_corrupt_photo_fails_alike_in_one_and_two_processes(job, single):
    (job / "with-bad").mkdir()
    for name in PHOTOS:
        (job / "with-bad" / name).write_bytes((job / "photos" / name).read_bytes())
    (job / "with-bad" / "c1b.png").write_bytes(b"not a picture")
    args = ["transfer", "with-bad", "-e", "joker.pt", "--json", *TINY]
    one = _essencekit(job, [*args, "-o", "bad1"], home="home1")
    two = _essencekit(job, [*args, "-o", "bad2"], processes=2, home="home1")
    assert one.returncode == two.returncode == 1
    failed = [line for line in _lines(one.stdout, "bad1") if line["status"] == "failed"]
    assert [line["source"] for line in failed] == ["with-bad/c1b.png"]
    assert _lines(two.stdout, "bad2") == _lines(one.stdout, "bad1")
    # reported once, by rank 0, as one process reports it (with --json the summary is on stderr)
    assert two.stderr.count("failed with-bad/c1b.png") == 1 and two.stderr.count("Failed inputs") == 1
    _same_pictures(job / "bad1", job / "bad2")


def test_a_job_that_loses_a_rank_is_completed_by_a_rerun(job, single):
    args = ["transfer", "photos", "-e", "joker.pt", "-o", "killed", "--json", *TINY]
    first = _essencekit(job, args, processes=2, home="home3", script="killer.py")
    assert first.returncode != 0  # torchrun stops the job when a rank dies
    out = job / "killed"
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    assert 0 < len(done) < len(PHOTOS) and all(not name.startswith(".") for name in done)
    rerun = _essencekit(job, [*args, "--skip-existing"], processes=2, home="home3")
    assert rerun.returncode == 0, rerun.stderr
    _same_pictures(job / "single", out)  # every output there, whole, no temporary file left
    statuses = {Path(line["output"]).name: line["status"] for line in _lines(rerun.stdout, "killed")}
    assert statuses == {name: "skipped" if name in done else "written" for name in statuses}
    # what the first attempt finished was kept as it was, not written again
    assert {name: (out / name).stat().st_ino for name in done} == {name: ino for name, (ino, _) in done.items()}
    assert all((out / name).stat().st_mtime_ns == mtime for name, (_, mtime) in done.items())


# --------------------------------------------------------------------------- the split itself


def test_every_rank_takes_its_turn_and_the_parts_cover_the_list():
    bases = [f"p{i}" for i in range(7)]
    parts = [shard_positions(bases, [True] * 7, Launch(rank, 3, rank, 3)) for rank in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard_positions(bases, [True] * 7, Launch()) == list(range(7))


def test_sources_whose_names_can_clash_share_a_rank():
    # a.png's second face and a_face1.png's edit may both want a_face1_joker.png: one process,
    # in input order, settles it as a single process would
    bases = ["a", "b", "a_face1", "c", "A_x_y", "b_2"]

    def split(named):
        return [shard_positions(bases, named, Launch(rank, 3, rank, 3)) for rank in range(3)]

    assert split([False] * 6) == [[0, 2, 4], [1, 5], [3]]
    # b_2.png's names were planned before the work (say a whole photo): it need not follow b
    assert split([False] * 5 + [True]) == [[0, 2, 4, 5], [1], [3]]
    # names all planned before any work never clash later: plain turns
    assert shard_positions(bases, [True] * 6, Launch(0, 2, 0, 2)) == [0, 2, 4]


def test_the_merged_results_come_in_input_order():
    parts = [[Result("a", "written", position=0), Result("c", "written", position=2, face=0),
              Result("c", "written", position=2, face=1)], [Result("b", "failed", position=1)]]
    assert [(r.source, r.face) for r in merge(parts)] == [("a", None), ("b", None), ("c", 0), ("c", 1)]


# leaving the group must stop gloo's threads even when torch._dynamo was imported inside it
# (torchvision, open_clip and torch-fidelity import it): a thread left running can abort the
# finished rank at interpreter exit
EXIT_PROBE = """
import os, sys
import numpy as np
from essencekit.backends import select_backend
from essencekit.distributed import ProcessGroup

def gloo_threads():
    names = (open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
    return sorted(name for name in names if "gloo" in name)

with ProcessGroup(select_backend("cpu")) as group:
    import torchvision  # noqa: F401 - imports torch._dynamo
    group.gather(np.ones((3, 2048), dtype=np.float32))
    inside = gloo_threads()
print(f"rank {group.launch.rank}: {len(inside)} gloo threads inside, after leaving {gloo_threads()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_leaving_the_group_stops_gloo_threads(job):
    (job / "exit_probe.py").write_text(EXIT_PROBE)
    done = _essencekit(job, [], processes=2, script="exit_probe.py")
    assert done.returncode == 0, done.stderr[-3000:]
    # the two ranks print at once: their lines may run together
    reports = sorted(re.findall(r"rank (\d): (\d+) gloo threads inside, after leaving (\[[^\]]*\])", done.stdout))
    assert [rank for rank, _, _ in reports] == ["0", "1"], done.stdout
    assert all(int(inside) > 0 for _, inside, _ in reports)  # the probe sees the threads while they run
    assert [after for _, _, after in reports] == ["[]", "[]"], reports
