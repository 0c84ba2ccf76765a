"""A picture of a `SyncScore` with PIL only (no plotting library): the distance-vs-offset curve on top, the per-frame
confidence over time below.

Top: mean SyncNet distance between lips and audio when the audio is shifted by −15 … +15 frames. A well-synced video
shows one clear dip at offset 0; the dip's depth below the median is the confidence (LSE-C), its bottom the distance
(LSE-D); a dip elsewhere means the audio is early (> 0) or late (< 0) by that many frames. A flat curve means SyncNet
sees no relation between the mouth and the sound. Bottom: confidence of each 5-frame window at that offset over the
video's time (9-frame running median, as the official code computes it); gaps are frames without a scored window.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .score import SyncScore

BACKGROUND = (255, 255, 255)
AXES = (60, 60, 60)
GRID = (225, 225, 225)
CURVE = (33, 102, 172)
ACCENT = (214, 39, 40)
MEDIAN = (120, 120, 120)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 or abs(v) >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")


class _Axes:
    """A rectangle of the image with data limits; draws grid, ticks and polylines."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xlim, ylim, font):
        self.draw, self.box, self.font = draw, box, font
        self.x0, self.x1 = xlim
        lo, hi = ylim
        pad = (hi - lo) * 0.08 if hi > lo else max(abs(hi), 1.0) * 0.1
        self.y0, self.y1 = lo - pad, hi + pad

    def px(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        fx = (x - self.x0) / (self.x1 - self.x0) if self.x1 != self.x0 else 0.5
        fy = (y - self.y0) / (self.y1 - self.y0)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    def frame(self, xlabel: str, ylabel: str, xticks=None) -> None:
        d, (left, top, right, bottom) = self.draw, self.box
        for y in _ticks(self.y0, self.y1):
            _, py = self.px(self.x0, y)
            d.line([(left, py), (right, py)], fill=GRID)
            d.text((left - 6, py), _label(y), fill=AXES, font=self.font, anchor="rm")
        for x in xticks if xticks is not None else _ticks(self.x0, self.x1, 8):
            px, _ = self.px(x, self.y0)
            d.line([(px, top), (px, bottom)], fill=GRID)
            d.text((px, bottom + 5), _label(x), fill=AXES, font=self.font, anchor="mt")
        d.rectangle(self.box, outline=AXES)
        d.text(((left + right) / 2, bottom + 24), xlabel, fill=AXES, font=self.font, anchor="mt")
        d.text((left, top - 6), ylabel, fill=AXES, font=self.font, anchor="ls")

    def hline(self, y: float, color, dash: int = 6) -> None:
        left, _, right, _ = self.box
        _, py = self.px(self.x0, y)
        for x in range(left, right, 2 * dash):
            self.draw.line([(x, py), (min(x + dash, right), py)], fill=color, width=1)

    def polyline(self, xs, ys, color, width: int = 2, dots: bool = False) -> None:
        """Broken at NaN values."""
        run: list[tuple[float, float]] = []
        for x, y in list(zip(xs, ys)) + [(None, float("nan"))]:
            if x is None or not math.isfinite(y):
                if len(run) > 1:
                    self.draw.line(run, fill=color, width=width, joint="curve")
                elif len(run) == 1:
                    self.draw.point(run, fill=color)
                run = []
                continue
            run.append(self.px(x, y))
            if dots:
                px, py = run[-1]
                self.draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)


def plot_sync(score: SyncScore, title: str | None = None, size: tuple[int, int] = (960, 620)) -> np.ndarray:
    """uint8 (H, W, 3) RGB picture of the figures, the offset curve and the per-frame confidence."""
    w, h = size
    image = Image.new("RGB", size, BACKGROUND)
    d = ImageDraw.Draw(image)
    big, small = _font(18), _font(13)
    offset = score.offset_frames
    head = (f"confidence {score.confidence:.3f} (LSE-C, higher = better)   distance {score.distance:.3f} "
            f"(LSE-D, lower = better)   offset {offset:+d} frames ({score.offset_seconds:+.2f} s)")
    d.text((20, 14), title or "SyncNet-v2 lip-sync score", fill=AXES, font=big)
    d.text((20, 40), head, fill=AXES, font=small)
    d.text((20, 58), f"{score.num_frames_scored} of {score.num_frames} frames scored (25 fps); offset > 0: audio "
                     "ahead of the video", fill=MEDIAN, font=small)

    # top: mean distance at each offset (x = offset in frames)
    offsets = score.offsets
    dists = score.mean_dists.tolist()
    median = score.distance + score.confidence  # confidence = median - min
    top = _Axes(d, (80, 110, w - 30, 110 + int(h * 0.36)), (offsets[-1] - 0.5, offsets[0] + 0.5),
                (min(dists), max(dists)), small)
    top.frame("audio offset (frames; > 0 = audio ahead of video)", "mean distance", xticks=list(range(-15, 16, 3)))
    top.hline(median, MEDIAN)
    top.polyline(offsets, dists, CURVE, dots=True)
    bx, by = top.px(offset, score.distance)
    _, my = top.px(offset, median)
    d.line([(bx, by), (bx, my)], fill=ACCENT, width=2)
    d.ellipse([bx - 5, by - 5, bx + 5, by + 5], outline=ACCENT, width=2)
    d.text((bx + 8, (by + my) / 2), f"confidence {score.confidence:.2f}", fill=ACCENT, font=small, anchor="lm")
    d.text((top.box[2] - 4, my - 3), "median", fill=MEDIAN, font=small, anchor="rb")

    # bottom: per-frame confidence over time (window starting at frame k, shown at k / 25 s)
    per_frame = score.per_frame.tolist()
    times = [k / score.frame_rate for k in range(len(per_frame))]
    finite = [v for v in per_frame if math.isfinite(v)] or [0.0]
    lo, hi = min(min(finite), 0.0), max(max(finite), score.confidence, 0.0)
    bottom_box = (80, top.box[3] + 80, w - 30, h - 50)
    bottom = _Axes(d, bottom_box, (0.0, max(times[-1] if times else 0.0, 1.0 / score.frame_rate)), (lo, hi), small)
    bottom.frame("time (s)", "per-frame confidence (9-frame median)")
    bottom.hline(0.0, GRID)
    bottom.hline(score.confidence, ACCENT)
    bottom.polyline(times, per_frame, CURVE)
    return np.asarray(image)
