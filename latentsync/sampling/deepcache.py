"""DeepCache state for one window's denoising run (reproduces DeepCache 0.1.1, `skip_mode="uniform"`)."""
from __future__ import annotations

import torch


class DeepCache:
    """What the U-Net caches between denoising steps and which steps run the whole network.

    Step `i` is full when `(i - first_step) % interval == 0` (`first_step` = the first index given to
    `begin_step`); on the other steps the U-Net reuses the hidden state that entered the up-block layer consuming
    skip tensor `branch` (branch 0 = the last layer of the last up block, fed by `conv_in`) and recomputes only
    that shallow branch. `interval=1` means every step is full (DeepCache off). Create one object per window run
    (the official helper is re-enabled per call; its step counter restarts at every chunk).
    """

    def __init__(self, interval: int = 3, branch: int = 0):
        if int(interval) != interval or interval < 1:
            raise ValueError(f"DeepCache interval must be an integer >= 1, got {interval!r}")
        if int(branch) != branch or branch < 0:
            raise ValueError(f"DeepCache branch must be an integer >= 0, got {branch!r}")
        self.interval = int(interval)
        self.branch = int(branch)
        self.reset()

    def reset(self) -> None:
        self.cached: torch.Tensor | None = None
        self.first_step: int | None = None
        self.step: int | None = None

    def begin_step(self, step_index: int) -> None:
        """Tell the cache which denoising step the next U-Net call belongs to."""
        if self.first_step is None:
            self.first_step = step_index
        self.step = step_index

    @property
    def is_full_step(self) -> bool:
        if self.step is None or self.first_step is None:
            return True
        return (self.step - self.first_step) % self.interval == 0

    @property
    def reuse(self) -> bool:
        """True when the next U-Net call may skip the deep part (a cache exists and the step is not full)."""
        return self.interval > 1 and self.cached is not None and not self.is_full_step

    def store(self, hidden_states: torch.Tensor) -> None:
        """Called by the U-Net on full steps with the hidden state entering the cached branch."""
        if self.interval > 1:
            self.cached = hidden_states.detach()
