"""Named U-Net configurations (our own YAMLs in `latentsync/configs/unet/`) and the released versions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

UNET_CONFIGS = ("stage1", "stage2", "stage2_512", "stage2_efficient")

# Released checkpoints: v1.5 = 256 px faces, v1.6 = 512 px faces; identical U-Net architecture (stage 2).
VERSIONS: dict[str, dict[str, Any]] = {
    "1.5": {"resolution": 256, "unet_config": "stage2"},
    "1.6": {"resolution": 512, "unet_config": "stage2_512"},
}


def load_config_file(name: str) -> dict[str, Any]:
    """The whole YAML (`data`, `run`, `model` sections) of config `name`."""
    if name not in UNET_CONFIGS:
        raise ValueError(f"unknown U-Net config {name!r}; choose one of {', '.join(UNET_CONFIGS)}")
    text = (Path(__file__).resolve().parent / "configs" / "unet" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def unet_config(name: str) -> dict[str, Any]:
    """`UNet3DConditionModel` constructor kwargs (the `model:` section) of config `name`."""
    model = dict(load_config_file(name)["model"])
    model["norm_eps"] = float(model["norm_eps"])
    return model


def resolution(name: str) -> int:
    """Face crop size R (`data.resolution`) of config `name`."""
    return int(load_config_file(name)["data"]["resolution"])

