"""Which source frame, at which time, each output frame shows: the length modes, for constant and variable frame rates.

Times are exact: integer ticks of `1 / base` seconds (constant rate F = p/q: base p, frame i starts at tick i*q; a
variable-rate file: its stream time base). An output frame's audio window is centred on its start time, so the
audio windows follow each frame's timestamp whatever the rate.

Length modes (what happens when the audio and the video differ in length):

| mode | output length | frames past the end of the video | output audio |
|---|---|---|---|
| `pingpong` (default, official) | the audio's | played backward, forward, ... | the audio (cut to the last frame) |
| `loop` | the audio's | the video again from its first frame | the audio (cut to the last frame) |
| `freeze` | the audio's | the last frame held | the audio (cut to the last frame) |
| `cut_off` | the shorter of the two | — | the audio cut to the video when longer |
| `silence` | the video's | — (frames past the audio get the embeddings of silence) | the audio, cut or padded with silence to the video |

"The audio's length" is counted as ComfyUI and the official code count it: every frame whose middle lies within
the audio, at least one frame (`round(duration * fps)` at a constant rate, halves rounded up).

`bounce` (the name ComfyUI's own lip-sync node gives the ping-pong mode) is accepted for `pingpong` everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .audio.windows import as_fraction

LENGTH_MODES = ("pingpong", "loop", "cut_off", "silence", "freeze")
LENGTH_MODE_ALIASES = {"bounce": "pingpong"}  # other names for a mode -> ours
AUDIO_DRIVEN = ("pingpong", "loop", "freeze")


def check_length_mode(mode: str) -> str:
    """The mode's own name (an alias such as `bounce` gives `pingpong`); ValueError for an unknown one."""
    mode = LENGTH_MODE_ALIASES.get(mode, mode)
    if mode not in LENGTH_MODES:
        aliases = ", ".join(f"{alias} (= {name})" for alias, name in LENGTH_MODE_ALIASES.items())
        raise ValueError(f"unknown length mode {mode!r}; choose one of {', '.join(LENGTH_MODES)} (also: {aliases})")
    return mode


@dataclass(frozen=True)
class SourceTiming:
    """Start tick of every source frame (`starts`, int64, from 0), the tick at which the last one ends, ticks per
    second (`base`) and the nominal frame rate (`fps`: exact for constant-rate video, the average otherwise)."""

    starts: np.ndarray
    end: int
    base: int
    fps: Fraction
    constant: bool

    def __post_init__(self) -> None:
        if len(self.starts) == 0:
            raise ValueError("the video has no frames")
        if self.base <= 0 or self.end <= int(self.starts[-1]):
            raise ValueError(f"invalid frame times (base {self.base}, last start {self.starts[-1]}, end {self.end})")

    @classmethod
    def constant_rate(cls, num_frames: int, fps) -> SourceTiming:
        fps = as_fraction(fps)
        starts = np.arange(num_frames, dtype=np.int64) * fps.denominator
        return cls(starts, num_frames * fps.denominator, fps.numerator, fps, True)

    @classmethod
    def from_timestamps(cls, pts: list[int] | np.ndarray, time_base: Fraction, last_duration: int | None,
                        nominal_fps: Fraction | None) -> SourceTiming:
        """Frame timestamps of a stream (in `time_base` units, presentation order). When every frame lies within a
        quarter frame of the nominal rate's grid the timing is that constant rate; otherwise the real timestamps
        are kept (variable frame rate)."""
        pts = np.asarray(pts, dtype=np.int64)
        if len(pts) == 0:
            raise ValueError("the video has no frames")
        pts = pts - pts[0]
        if len(pts) > 1 and np.any(np.diff(pts) <= 0):
            raise ValueError("frame timestamps are not increasing")
        time_base = Fraction(time_base)
        if nominal_fps is None or nominal_fps <= 0:
            span = int(pts[-1]) * time_base
            nominal_fps = Fraction(len(pts) - 1) / span if span > 0 else Fraction(25)
            nominal_fps = nominal_fps.limit_denominator(1001)
        nominal_fps = Fraction(nominal_fps)
        grid = np.arange(len(pts), dtype=np.float64) / float(nominal_fps)
        seconds = pts.astype(np.float64) * float(time_base)
        if np.all(np.abs(seconds - grid) <= 0.25 / float(nominal_fps)):
            return cls.constant_rate(len(pts), nominal_fps)
        if last_duration is None or last_duration <= 0:
            last_duration = int(np.median(np.diff(pts))) if len(pts) > 1 else max(1, round(1 / (nominal_fps * time_base)))
        base = time_base.denominator
        return cls(pts * time_base.numerator, int(pts[-1] + last_duration) * time_base.numerator, base,
                   nominal_fps, False)

    def __len__(self) -> int:
        return int(len(self.starts))

    @property
    def durations(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.end))

    @property
    def duration(self) -> Fraction:
        return Fraction(self.end, self.base)


@dataclass(frozen=True)
class OutputPlan:
    """The output video: `source[j]` is the source frame shown as output frame j, from tick `starts[j]` (same `base`
    as the source timing) until the next start or `end`. `audio_samples(rate)` is the length of the output audio."""

    mode: str
    source: np.ndarray  # int64 (M,)
    starts: np.ndarray  # int64 (M,)
    end: int
    base: int
    fps: Fraction
    constant: bool
    audio_duration: Fraction  # of the user's audio

    def __len__(self) -> int:
        return int(len(self.source))

    @property
    def duration(self) -> Fraction:
        return Fraction(self.end, self.base)

    def audio_samples(self, sample_rate: int) -> int:
        """Samples of output audio: the user's audio cut to the video (never padded), padded with silence to the
        video's end in `silence` mode."""
        video = round(self.duration * sample_rate)
        if self.mode == "silence":
            return video
        return min(video, round(self.audio_duration * sample_rate))

    def times(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
        """(start ticks of output frames start..stop-1, base)."""
        return self.starts[start:stop], self.base


def source_order(mode: str, num_source: int, num_out: int) -> np.ndarray:
    """Source index of output frames 0..num_out-1 when the video must run `num_out` frames (audio-driven modes)."""
    mode = check_length_mode(mode)
    if num_source <= 0:
        raise ValueError("the video has no frames")
    j = np.arange(num_out, dtype=np.int64)
    if mode == "pingpong":
        cycle = np.concatenate([np.arange(num_source), np.arange(num_source - 1, -1, -1)]).astype(np.int64)
        return cycle[j % len(cycle)]
    if mode == "loop":
        return j % num_source
    if mode == "freeze":
        return np.minimum(j, num_source - 1)
    return j  # cut_off / silence never run past the video


def plan_output(timing: SourceTiming, audio_duration, mode: str = "pingpong") -> OutputPlan:
    """Output frames for a video with `timing` and audio of `audio_duration` seconds, in `mode`."""
    mode = check_length_mode(mode)
    audio_duration = Fraction(audio_duration)
    if audio_duration < 0:
        raise ValueError(f"audio duration must be >= 0, got {audio_duration}")
    n = len(timing)
    limit = audio_duration * timing.base  # the audio's end, in ticks
    if mode == "silence":
        source = np.arange(n, dtype=np.int64)
        return OutputPlan(mode, source, timing.starts.copy(), timing.end, timing.base, timing.fps, timing.constant,
                          audio_duration)
    if timing.constant:
        q = timing.fps.denominator
        count = max(1, int(limit / q + Fraction(1, 2)))  # frames whose middle lies within the audio
        if mode == "cut_off":
            count = min(count, n)
        source = source_order(mode if mode != "cut_off" else "silence", n, count)
        starts = np.arange(count, dtype=np.int64) * q
        return OutputPlan(mode, source, starts, count * q, timing.base, timing.fps, True, audio_duration)
    # variable frame rate: each output frame lasts as long as its source frame
    durations = timing.durations
    if mode == "cut_off":
        source = np.arange(n, dtype=np.int64)
    else:
        cycle_len = 2 * n if mode == "pingpong" else n
        cycle_ticks = int(durations[source_order(mode, n, cycle_len)].sum()) if mode != "freeze" else int(timing.end)
        reps = 1 if mode == "freeze" else int(math.ceil(limit / cycle_ticks)) + 1
        source = source_order(mode, n, reps * cycle_len if mode != "freeze" else n)
        if mode == "freeze":  # the held frame repeats with the last frame's duration
            extra = int(math.ceil(max(Fraction(0), limit - timing.end) / int(durations[-1]))) + 1
            source = np.concatenate([source, np.full(extra, n - 1, dtype=np.int64)])
    d = durations[source]
    starts = np.concatenate([[0], np.cumsum(d)[:-1]]).astype(np.int64)
    middles = 2 * starts + d  # twice the middle tick, to stay in integers
    count = max(1, int(np.count_nonzero(middles <= 2 * limit)))
    count = min(count, len(source))
    source, starts = source[:count], starts[:count]
    end = int(starts[-1] + durations[source[-1]])
    return OutputPlan(mode, source, starts, end, timing.base, timing.fps, False, audio_duration)
