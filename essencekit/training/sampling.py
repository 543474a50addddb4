"""Which training images each step sees, on each process, and which are flipped.

The order is torch's ``DistributedSampler`` (a permutation of the images per epoch from the
run's seed, ``drop_last`` so that every process gets the same number), cut into batches of
``batch_size`` per process. Process ``r`` of ``W`` takes positions ``r, r + W, ...`` of the
permutation, so step ``t`` of a W-process run with batch B sees exactly the images of step
``t`` of a one-process run with batch W x B: the two runs train on the same global batches.
Flips are drawn per step from the seed, for the global batch, and each process takes its
positions' flips. Both depend only on (seed, step), so a resumed run sees what an
uninterrupted one would have seen, with no random state to save.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data.distributed import DistributedSampler

from ..distributed import Launch


def _stream(seed: int, purpose: str) -> torch.Generator:
    digest = hashlib.sha256(f"essencekit-train:{seed}:{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class StepSampler:
    """The images (indices) and flips of every step for one process."""

    def __init__(self, images: int, batch_size: int, launch: Launch, seed: int, *, flip: bool = True):
        self.launch, self.batch_size, self.seed, self.flip = launch, batch_size, seed, flip
        self.sampler = DistributedSampler(
            range(images), num_replicas=launch.world_size, rank=launch.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{images} images cannot fill one batch of {batch_size} on {launch.world_size} processes")
        self._epoch, self._order = None, []

    def indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def flips(self, step: int) -> list[bool]:
        if not self.flip:
            return [False] * self.batch_size
        world = self.launch.world_size
        coins = torch.rand(self.batch_size * world, generator=_stream(self.seed, f"flip-{step}")) < 0.5
        # global batch position of this process's j-th image: j * world + rank (the sampler's stride)
        return [bool(coins[j * world + self.launch.rank]) for j in range(self.batch_size)]
