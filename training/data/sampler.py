"""Deterministic, resumable data order for several processes.

Global sample ids are a pure function of the step: on micro-step m (optimizer step x accumulation + micro index),
process `rank` of `world` takes ids `(m * world + rank) * batch + j`, j < batch. The datasets map an id to a clip
(a fresh seeded permutation every pass over the data) and to its random windows (a generator seeded with the id),
so a resumed run (which skips the micro-batches already trained with accelerate's `skip_first_batches`) sees exactly
the samples the uninterrupted run would have seen, whatever the number of loader workers, and no two processes ever
see the same id.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class StepSampler(Sampler[int]):
    """Infinite stream of this process's sample ids from micro-step 0 on."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, repeat_first: bool = False):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.repeat_first = repeat_first  # debugging: overfit the first batch (same ids every step)

    def __iter__(self) -> Iterator[int]:
        m = 0
        while True:
            base = (m * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            if not self.repeat_first:
                m += 1


class SampleOrder:
    """Sample id -> (clip index, numpy generator for its random choices)."""

    def __init__(self, num_clips: int, seed: int):
        if num_clips < 1:
            raise ValueError("no clips")
        self.num_clips, self.seed = num_clips, int(seed)
        self._perm_epoch, self._perm = -1, None

    def clip(self, sample_id: int) -> int:
        epoch, pos = divmod(int(sample_id), self.num_clips)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def rng(self, sample_id: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 1, int(sample_id)])
