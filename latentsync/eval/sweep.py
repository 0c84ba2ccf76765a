"""The offset sweep of the official SyncNet evaluation: distances between each lip embedding and the audio embeddings
15 frames before to 15 frames after it, and the figures read from them.

For frame i, row i holds ``‖v_i − a_{i+j−15} + 1e-6‖₂`` for j = 0..30 (`torch.nn.functional.pairwise_distance`,
whose eps is added to the difference), with a_k = 0 outside the track (zero padding). Then

* ``mean_dists`` = mean of the rows over all frames (padding rows included),
* LSE-D ``distance`` = min(mean_dists), ``minidx`` = its index,
* AV ``offset`` = 15 − minidx frames: **positive = the audio is ahead of the video** (frame i's lips match the sound
  of frame i − offset; delaying the audio by ``offset`` frames fixes it),
* LSE-C ``confidence`` = torch.median(mean_dists) − min(mean_dists) (torch's lower median of the 31 values),
* per-frame confidence = median(mean_dists) − row_i[minidx], median-filtered over 9 frames (zero-padded, as
  ``scipy.signal.medfilt``) — computed and dropped by the official code, kept here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

VSHIFT = 15
PAIRWISE_EPS = 1e-6
FRAMEWISE_KERNEL = 9


def _rows(visual: torch.Tensor, audio_context: torch.Tensor) -> torch.Tensor:
    """visual (b, D), audio_context (b + W - 1, D) -> (b, W): row i = distances of v_i to context[i : i + W]."""
    b, dim = visual.shape
    width = audio_context.shape[0] - b + 1
    windows = audio_context.unfold(0, width, 1).permute(0, 2, 1)  # (b, W, D)
    pairs_v = visual[:, None, :].expand(b, width, dim).reshape(-1, dim)
    return F.pairwise_distance(pairs_v, windows.reshape(-1, dim), eps=PAIRWISE_EPS).view(b, width)


def distance_rows(visual: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(N, D) lip and audio embeddings of one track -> (N, 2·vshift + 1) distances (official ``calc_pdist``)."""
    if visual.shape != audio.shape or visual.ndim != 2:
        raise ValueError(f"visual and audio embeddings must both be (N, D), got {tuple(visual.shape)} and "
                         f"{tuple(audio.shape)}")
    return _rows(visual, F.pad(audio, (0, 0, vshift, vshift)))


@dataclass(frozen=True)
class SweepFigures:
    mean_dists: torch.Tensor  # (2·vshift + 1,)
    distance: float  # LSE-D: min of mean_dists
    min_index: int
    offset: int  # vshift - min_index (frames; > 0: audio ahead of video)
    confidence: float  # LSE-C: median(mean_dists) - min
    median: float


def sweep_figures(rows: torch.Tensor) -> SweepFigures:
    """The official reading of (N, W) distance rows: mean over frames, min, argmin, offset, median - min."""
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] % 2 == 0:
        raise ValueError(f"expected (N >= 1, 2·vshift + 1) distance rows, got {tuple(rows.shape)}")
    vshift = rows.shape[1] // 2
    mean_dists = rows.mean(dim=0)
    min_value, min_index = torch.min(mean_dists, 0)
    median = torch.median(mean_dists)
    return SweepFigures(mean_dists=mean_dists, distance=float(min_value), min_index=int(min_index),
                        offset=vshift - int(min_index), confidence=float(median - min_value), median=float(median))


def medfilt_zero(x: np.ndarray, kernel: int) -> np.ndarray:
    """1-D running median over ``kernel`` (odd) samples with zeros beyond both ends (``scipy.signal.medfilt``)."""
    if kernel % 2 != 1:
        raise ValueError(f"kernel must be odd, got {kernel}")
    x = np.asarray(x, dtype=np.float64)
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1)


def framewise_confidence(rows: torch.Tensor, figures: SweepFigures, kernel: int = FRAMEWISE_KERNEL) -> torch.Tensor:
    """(N,) per-frame confidence of one track: median(mean_dists) − rows[:, minidx], median-filtered (zero-padded)."""
    fconf = (torch.tensor(figures.median, dtype=rows.dtype) - rows[:, figures.min_index]).double().numpy()
    return torch.from_numpy(medfilt_zero(fconf, kernel)).float()


class DistanceSweep:
    """`distance_rows` of one track, fed embedding pairs in order and computed as soon as each row's ±vshift
    neighbourhood is known, so a long track never holds more than ~2·vshift embeddings. `finish()` pads the end."""

    def __init__(self, vshift: int = VSHIFT):
        self.vshift = vshift
        self._audio: torch.Tensor | None = None  # audio embeddings [self._audio_start, self.count)
        self._audio_start = 0
        self._visual: torch.Tensor | None = None  # lip embeddings [self._next_row, self.count)
        self._next_row = 0
        self.count = 0
        self._rows: list[torch.Tensor] = []
        self.finished = False

    def add(self, visual: torch.Tensor, audio: torch.Tensor) -> None:
        if self.finished:
            raise RuntimeError("DistanceSweep.add after finish()")
        if visual.shape != audio.shape or visual.ndim != 2:
            raise ValueError(f"expected matching (b, D) embeddings, got {tuple(visual.shape)}, {tuple(audio.shape)}")
        visual, audio = visual.detach().float().cpu(), audio.detach().float().cpu()
        self._visual = visual if self._visual is None else torch.cat([self._visual, visual])
        self._audio = audio if self._audio is None else torch.cat([self._audio, audio])
        self.count += visual.shape[0]
        self._emit(self.count - self.vshift)

    def finish(self) -> torch.Tensor:
        """All rows (N, 2·vshift + 1); audio beyond the last frame counts as zeros."""
        if not self.finished:
            self._emit(self.count)
            self.finished = True
        return torch.cat(self._rows) if self._rows else torch.zeros(0, 2 * self.vshift + 1)

    def _emit(self, stop: int) -> None:
        """Rows [next_row, stop): they need audio up to stop - 1 + vshift (zeros where it does not exist)."""
        if stop <= self._next_row or self._visual is None:
            return
        v = self.vshift
        lo, hi = self._next_row - v, stop + v  # audio index range needed, exclusive hi
        have_lo, have_hi = max(lo, self._audio_start), min(hi, self.count)
        context = self._audio[have_lo - self._audio_start : have_hi - self._audio_start]
        context = F.pad(context, (0, 0, have_lo - lo, hi - have_hi))
        n = stop - self._next_row
        self._rows.append(_rows(self._visual[:n], context))
        self._visual = self._visual[n:]
        self._next_row = stop
        keep_from = max(self._next_row - v, self._audio_start)  # audio older than that is never needed again
        self._audio = self._audio[keep_from - self._audio_start :]
        self._audio_start = keep_from
