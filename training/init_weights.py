"""Where a U-Net training run starts: a released or own checkpoint loaded into the configured layout, as the
official `UNet3DConditionModel.from_pretrained` does (`load_state_dict(strict=False)`), but with every key that does
not carry over listed instead of silently ignored.

Allowed differences are the motion modules only: a file with motion modules the model lacks (the released stage-2
U-Net into stage 1, or its encoder motion modules into the decoder-only `stage2_efficient`) drops them; motion
modules the file lacks (a stage-1 file into stage 2) stay at their zero-initialised identity state. Any
other difference is a wrong `model.base` and an error. A run whose frozen parameters did not come from the file
(they would stay at random init for the whole run) refuses to start."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from latentsync.models.checkpoint import CheckpointError

from .config import ConfigError

LOG = logging.getLogger("latentsync.training")
MOTION = ".motion_modules."
POSITIONAL = "pos_encoder.pe"  # deterministic sinusoid buffers, rebuilt by the model


@dataclass
class InitReport:
    """What a run started from: `source` (None = fresh init), the file's keys the model has no place for
    (`dropped`), and the model's keys the file did not set (`at_init`)."""

    source: str | None
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    at_init: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.source is None:
            return "fresh random init (ckpt.init_from: null)"
        return (f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.dropped)} dropped (the model has no "
                f"place for them), {len(self.at_init)} at init")

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"source": self.source, "dropped": self.dropped, "at_init": self.at_init,
                                    "loaded": len(self.loaded)}, indent=1), encoding="utf-8")


def fresh_init(unet: nn.Module) -> InitReport:
    return InitReport(None, at_init=[k for k in unet.state_dict() if not k.endswith(POSITIONAL)])


def load_initial_weights(unet: nn.Module, state: dict[str, torch.Tensor], source: str) -> InitReport:
    """Load `state` into `unet`; only motion-module keys may be missing on either side (see the module doc)."""
    expected = {k: v for k, v in unet.state_dict().items() if not k.endswith(POSITIONAL)}
    state = {k: v for k, v in state.items() if not k.endswith(POSITIONAL)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    at_init = [k for k in missing if MOTION in k]
    dropped = [k for k in unexpected if MOTION in k]
    wrong_missing = [k for k in missing if k not in set(at_init)]
    wrong_unexpected = [k for k in unexpected if MOTION not in k]
    shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if wrong_missing or wrong_unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit the training model config: missing {wrong_missing[:3]} ({len(wrong_missing)}), "
            f"unexpected {wrong_unexpected[:3]} ({len(wrong_unexpected)}), shape mismatches {shapes[:3]} "
            f"({len(shapes)}). Check model.base against the file.")
    loaded = [k for k in state if k in expected]
    unet.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return InitReport(source, loaded, dropped, at_init)


def require_frozen_loaded(unet: nn.Module, report: InitReport) -> None:
    """Refuse a run in which a frozen parameter did not come from the init file: it would stay at its random
    (or zero) init for the whole run."""
    at_init = set(report.at_init)
    frozen = [n for n, p in unet.named_parameters() if not p.requires_grad and n in at_init]
    if frozen:
        raise ConfigError(
            f"{len(frozen)} frozen U-Net parameters would stay at their initial values for the whole run (e.g. "
            f"{frozen[:3]}): {report.summary()}. Set ckpt.init_from (\"1.5\" / \"1.6\" for the released U-Net, or a "
            "checkpoint file), or train them too (run.trainable_modules).")


def log_report(report: InitReport, output_dir: Path | None) -> None:
    """Log the summary; the full lists go to `<output_dir>/logs/init_weights.json`."""
    LOG.info("U-Net init: %s", report.summary())
    if report.dropped:
        LOG.info("dropped from the init file: %s", _groups(report.dropped))
    if report.at_init and report.source is not None:
        LOG.info("left at init: %s", _groups(report.at_init))
    if output_dir is not None:
        report.write(output_dir / "logs" / "init_weights.json")


def _groups(keys: list[str]) -> str:
    """Key counts per top-level block (`down_blocks.0`, `up_blocks.3`, ...), for a readable log line."""
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        head = ".".join(parts[:2]) if parts[0].endswith("blocks") else parts[0]
        counts[head] = counts.get(head, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in counts.items())
