"""The W+ cache shared between processes: the ranks of a torchrun job, or two runs at once."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from essencekit.aligners import FaceLandmarks
from essencekit.latent_cache import CachedFace, CacheRecord, LatentCache

IMAGE = "cd" * 32
LANDMARKS = FaceLandmarks((1.0, 2.0), (3.0, 2.0), (1.5, 4.0), (2.5, 4.0), (0.0, 0.0, 5.0, 5.0), 0.9)


def _face(index: int) -> CachedFace:
    return CachedFace(index, LANDMARKS, {"quad": [[index, 0], [0, 4], [4, 4], [4, 0]], "size": 1024}, 4.0)


def _latent(writer: int, round_: int) -> torch.Tensor:
    return torch.full((10, 64), float(writer * 1000 + round_))


def _write_many(root, writer: int, rounds: int, start) -> None:
    cache = LatentCache("ab" * 32, "dlib", root=root)
    start.wait()
    for round_ in range(rounds):
        cache.store(IMAGE, CacheRecord("largest", [_face(0)], [], {0: _latent(writer, round_)}))


def test_two_writers_of_one_key_never_leave_a_damaged_entry(tmp_path):
    rounds = 40
    context = multiprocessing.get_context("fork")
    start = context.Barrier(3)
    writers = [context.Process(target=_write_many, args=(tmp_path, w, rounds, start)) for w in (1, 2)]
    for process in writers:
        process.start()
    cache = LatentCache("ab" * 32, "dlib", root=tmp_path)
    start.wait()
    seen = set()
    while any(process.is_alive() for process in writers):
        record = cache.load(IMAGE)
        if record is None:  # not written yet; once written, a rename never leaves it missing or broken
            assert not seen
            continue
        value = record.latents[0]
        # always one writer's whole tensor: never a mix, never cut short
        assert value.shape == (10, 64) and torch.equal(value, torch.full_like(value, value[0, 0].item()))
        seen.add(int(value[0, 0]))
    for process in writers:
        process.join()
        assert process.exitcode == 0
    final = cache.load(IMAGE)
    assert int(final.latents[0][0, 0]) in {1000 + rounds - 1, 2000 + rounds - 1}
    assert seen <= {w * 1000 + r for w in (1, 2) for r in range(rounds)}
    assert [p.name for p in cache.path(IMAGE).parent.iterdir()] == [cache.path(IMAGE).name]  # no temporary file


def test_a_writer_keeps_the_faces_another_stored_meanwhile(tmp_path):
    cache = LatentCache("ab" * 32, "dlib", root=tmp_path)
    # one rank inverted every face; another, which read the cache before, stores only the largest
    cache.store(IMAGE, CacheRecord("all", [_face(0), _face(1)], [], {0: _latent(1, 0), 1: _latent(1, 1)}))
    cache.store(IMAGE, CacheRecord("largest", [_face(0)], [], {0: _latent(2, 0)}))
    record = cache.load(IMAGE)
    assert record.mode == "all" and [f.index for f in record.faces] == [0, 1]
    assert torch.equal(record.latents[1], _latent(1, 1)) and torch.equal(record.latents[0], _latent(2, 0))
    # and the other way round: the fuller detection takes over, the face already inverted stays
    cache.store("ef" * 32, CacheRecord("largest", [_face(0)], [], {0: _latent(3, 0)}))
    cache.store("ef" * 32, CacheRecord("all", [_face(0), _face(1)], [], {1: _latent(4, 1)}))
    record = cache.load("ef" * 32)
    assert record.mode == "all" and set(record.latents) == {0, 1}
    assert torch.equal(record.latents[0], _latent(3, 0))


@pytest.mark.parametrize("other_place", [True, False])
def test_a_different_detection_replaces_the_entry(tmp_path, other_place):
    cache = LatentCache("ab" * 32, "dlib", root=tmp_path)
    cache.store(IMAGE, CacheRecord("largest", [_face(0)], [], {0: _latent(1, 0)}))
    moved = CachedFace(0, LANDMARKS, {"quad": [[9, 9], [0, 4], [4, 4], [4, 0]], "size": 1024}, 4.0)
    face = moved if other_place else _face(0)
    cache.store(IMAGE, CacheRecord("none" if not other_place else "largest", [face], [], {0: _latent(2, 0)}))
    record = cache.load(IMAGE)
    assert torch.equal(record.latents[0], _latent(2, 0)) and record.faces[0].transform == face.transform
