"""Where a transfer run's time goes (essencekit.transfers.timing) and the backend's settings
around a run (Backend.inference_session)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

import essencekit
from essencekit.backends import select_backend
from essencekit.transfers.timing import OFF, SECTIONS, TimedAligner, Timings

FIXTURES = Path(__file__).parent / "fixtures"


def test_nested_sections_count_only_their_own_time(mocker):
    clock = iter([0.0, 1.0, 3.0, 10.0])  # outer opens, inner opens, inner closes, outer closes
    mocker.patch("essencekit.transfers.timing.time.perf_counter", side_effect=lambda: next(clock))
    timings = Timings()
    with timings.section("align"), timings.section("detect"):
        pass
    assert timings.seconds == {"detect": 2.0, "align": 8.0}
    assert timings.calls == {"detect": 1, "align": 1}


def test_sections_on_several_threads_add_up():
    timings = Timings()

    def work():
        for _ in range(50):
            with timings.section("write"):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timings.calls == {"write": 200}


def test_the_default_times_nothing():
    with OFF.section("encode"):
        pass


def test_a_timed_aligner_is_the_aligner_it_wraps():
    class One(essencekit.Aligner):
        name, priority = "one", 3

        def detect(self, image):
            return ["face"]

    timings = Timings()
    timed = TimedAligner(One(), timings)
    assert (timed.name, timed.priority, timed.availability()) == ("one", 3, (True, ""))
    assert timed.detect(None) == ["face"] and timings.calls == {"detect": 1}


def test_a_run_reports_every_stage_of_each_photo(tmp_path):
    from essencekit.essence import Essence
    from essencekit.transfers.api import Transferrer

    crops = tmp_path / "in"
    crops.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(crops / f"c{i}.png")
    models = Transferrer(encoder=FIXTURES / "tiny-e4e.pt", device="cpu")
    g = models.generator
    essence = Essence(torch.full((g.n_latent, g.style_dim), 0.1), metadata={"name": "t"})
    run = models.transfer(crops, essence, 1.0, output=tmp_path / "out", align=False, cache=False, paste="edited")
    timings = Timings()
    run.pipeline.timings = timings
    assert all(r.status == "written" for r in run)
    # no detection without alignment; every other stage for each photo
    assert set(timings.calls) == set(SECTIONS) - {"detect"}
    assert all(timings.calls[name] == 2 for name in ("decode", "encode", "synthesise", "paste", "write"))
    assert all(seconds >= 0 for seconds in timings.seconds.values())


# --------------------------------------------------------------------------- the backend's session


def test_a_session_splits_the_cores_and_gives_them_back():
    cpu = select_backend("cpu")
    before = torch.get_num_threads()
    assert cpu.compute_threads(0) is None  # no I/O threads: the models keep every core
    with cpu.inference_session(io_threads=1):
        assert torch.get_num_threads() == max(1, before - 1)
    assert torch.get_num_threads() == before


def test_a_device_off_the_host_cores_leaves_the_threads_alone():
    class Remote(essencekit.Backend):
        name = "remote"

        def availability(self):
            return True, ""

        @property
        def device(self):
            return torch.device("cpu")

    before = torch.get_num_threads()
    with Remote().inference_session(io_threads=8):
        assert torch.get_num_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, on Linux only")
def test_the_cpu_session_reuses_freed_memory_only_while_it_lasts(monkeypatch):
    from essencekit_builtins import malloc

    monkeypatch.delenv("ESSENCEKIT_CPU_MALLOC_TUNING", raising=False)
    if malloc._libc() is None or malloc.tune_malloc():
        pytest.skip("not glibc, or the process-wide tuning is on")
    calls = []
    real = malloc._apply
    monkeypatch.setattr(malloc, "_apply", lambda libc, settings: calls.append(settings) or real(libc, settings))
    cpu = select_backend("cpu")
    with cpu.inference_session():
        assert malloc.reusing()
        with cpu.inference_session():  # nested: set once, undone once
            pass
        assert malloc.reusing()
    assert not malloc.reusing()
    assert calls == [malloc.MALLOC_SETTINGS, malloc.DEFAULTS]
