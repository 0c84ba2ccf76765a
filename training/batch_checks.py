"""What the training loop checks on every micro-batch: a non-finite loss stops the run on every process, naming the
step, the batch's clips and the loss terms (instead of the gradient scaler skipping the step silently); clips the
dataset replaced because they failed to decode are counted for the step's metrics."""
from __future__ import annotations

from collections.abc import Callable

import torch


class NonFiniteLossError(RuntimeError):
    pass


class BatchChecks:
    def __init__(self, accelerator, clip_name: Callable[[int], str], skipped_clips: int = 0):
        self.accelerator, self.clip_name = accelerator, clip_name
        self.skipped_clips = int(skipped_clips)  # left out when the data set was admitted (logged then)
        self.replaced = 0

    def after_losses(self, losses: dict[str, torch.Tensor], batch: dict, step: int) -> None:
        """Call on every process for every micro-batch of optimizer step `step` (1-based), before backward."""
        bad = not all(bool(torch.isfinite(v.detach()).all()) for v in losses.values())
        flag = torch.tensor([1.0 if bad else 0.0], device=self.accelerator.device)
        if float(self.accelerator.reduce(flag, "sum").item()) > 0:  # every process stops, not only the one with NaN
            rank = self.accelerator.process_index
            if not bad:
                raise NonFiniteLossError(f"step {step}: another process got a non-finite loss (its error names the "
                                         f"clips); process {rank} stops too")
            terms = {k: float(v.detach().float().mean()) for k, v in losses.items()}
            clips = [self.clip_name(int(c)) for c in batch["clip"].tolist()]
            raise NonFiniteLossError(
                f"step {step}: non-finite loss on process {rank}: {terms}; clips {clips} (sample ids "
                f"{batch['sample_id'].tolist()}). Check these clips, lower optimizer.lr or try "
                "run.mixed_precision=bf16; resume from the last state with ckpt.resume=auto.")
        if "replaced" in batch:
            self.replaced += int(batch["replaced"].sum())

    def step_metrics(self) -> dict[str, float]:
        """Replaced clips of this step over all processes (call on every process), and the admission count."""
        total = self.accelerator.reduce(torch.tensor([float(self.replaced)], device=self.accelerator.device), "sum")
        self.replaced = 0
        return {"data/replaced_clips": float(total.item()), "data/skipped_clips": float(self.skipped_clips)}
