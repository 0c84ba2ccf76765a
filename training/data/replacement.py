"""A clip that fails to decode during training is logged and replaced by another clip (as the official dataset
does), never the end of a run. The replacement is drawn from the sample's own generator, so a resumed run replaces
exactly as the uninterrupted one did; every sample says how many clips it replaced (the loop logs the count)."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from .clip_set import ClipSet
from .clips import DECODE_ERRORS
from .sampler import SampleOrder

LOG = logging.getLogger("latentsync.training")
MAX_TRIES = 8


def read_with_replacement(order: SampleOrder, sample_id: int, clips: ClipSet,
                          read: Callable[[int, np.random.Generator], dict]) -> dict:
    """`read(clip index, rng)` of the sample's clip, or of randomly drawn other clips while reading fails. The
    item gets `sample_id`, `clip` (the clip actually read) and `replaced` (how many failed before it)."""
    rng = order.rng(sample_id)
    clip = order.clip(sample_id)
    failed: list[str] = []
    for _ in range(MAX_TRIES):
        try:
            item = read(clip, rng)
        except DECODE_ERRORS as exc:
            LOG.warning("training data: %s failed to decode (%s: %s); replaced by another clip", clips.clips[clip],
                        type(exc).__name__, exc)
            failed.append(str(clips.clips[clip]))
            clip = int(rng.integers(len(clips)))
            continue
        return {**item, "sample_id": int(sample_id), "clip": clip, "replaced": len(failed)}
    raise RuntimeError(f"{MAX_TRIES} clips in a row failed to decode ({failed}): check the data set (python -m "
                       "training.prepare_data writes clips that decode)")
