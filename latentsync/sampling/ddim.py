"""The DDIM scheduler exactly as LatentSync configures it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import DDIMScheduler


def scheduler_config() -> dict[str, Any]:
    """Our `latentsync/configs/scheduler_config.json` as a dict."""
    text = (Path(__file__).resolve().parents[1] / "configs" / "scheduler_config.json").read_text(encoding="utf-8")
    return json.loads(text)


def make_scheduler(**overrides: Any) -> DDIMScheduler:
    """A fresh `DDIMScheduler` (scaled_linear 0.00085 -> 0.012, 1000 steps, leading spacing, steps_offset 1,
    no clipping, `set_alpha_to_one False`, epsilon prediction). Stateful: use one per concurrent sampling run."""
    config = {k: v for k, v in scheduler_config().items() if not k.startswith("_")}
    config.update(overrides)
    return DDIMScheduler.from_config(config)
