"""Cutting scenes into 5-10 s training segments and the steady-face rule."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .decode import FPS


@dataclass
class Segment:
    start: int  # 25 fps frame index, inclusive
    end: int  # exclusive
    reason: str | None = None  # why it is dropped (None: kept so far)
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / FPS, self.end / FPS


def split_scene(start: int, end: int, min_seconds: float, max_seconds: float) -> list[Segment]:
    """Equal pieces of min..max seconds covering the scene; a scene shorter than `min_seconds` gives one dropped
    segment (with its reason)."""
    length = end - start
    if length < min_seconds * FPS:
        return [Segment(start, end, f"scene shorter than {min_seconds:g} s ({length / FPS:.2f} s)")]
    pieces = max(1, math.ceil(length / (max_seconds * FPS)))
    bounds = [start + round(i * length / pieces) for i in range(pieces + 1)]
    return [Segment(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def steady_face(boxes: list[np.ndarray | None], max_jump: float = 0.25, max_scale: float = 1.5) -> str | None:
    """None when every frame has a face and it moves smoothly; else the reason. A jump of the box centre by more
    than `max_jump` x the box size, or a size change by more than `max_scale` between consecutive frames, means the
    tracked face was lost or switched to another person."""
    missing = sum(b is None for b in boxes)
    if missing:
        return f"no face in {missing} of {len(boxes)} frames"
    for i in range(1, len(boxes)):
        a, b = boxes[i - 1], boxes[i]
        size_a = max(a[2] - a[0], a[3] - a[1])
        size_b = max(b[2] - b[0], b[3] - b[1])
        centre_a, centre_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
        if np.linalg.norm(centre_b - centre_a) > max_jump * size_a:
            return f"face jumps between frames {i - 1} and {i} of the segment"
        if max(size_a, size_b) > max_scale * min(size_a, size_b):
            return f"face size changes abruptly between frames {i - 1} and {i} of the segment"
    return None
