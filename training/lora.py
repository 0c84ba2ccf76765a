"""LoRA fine-tuning of the U-Net with peft (`lora.rank > 0`): low-rank adapters on the attention and motion-module
projections (`lora.target_modules`), everything else frozen. The exported checkpoint is the adapter alone
(`latentsync_lora.safetensors`, `latentsync.models.lora` format), which the nodes and `python -m latentsync --lora`
merge into the U-Net it was trained on."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from latentsync.models.lora import save_lora

from .config import ConfigError

LORA_FILE = "latentsync_lora.safetensors"


def lora_rank(cfg: DictConfig) -> int:
    section = cfg.get("lora") or {}
    return int(section.get("rank", 0) or 0)


def lora_alpha(cfg: DictConfig) -> float:
    alpha = cfg.lora.get("alpha")
    return float(alpha) if alpha not in (None, "") else float(lora_rank(cfg))


def add_lora(unet: torch.nn.Module, cfg: DictConfig) -> list[str]:
    """Freeze `unet` and inject the adapters in place; returns the names of the trainable (adapter) parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    if cfg.ckpt.get("init_from") in (None, ""):
        raise ConfigError("lora.rank > 0 trains an adapter on top of existing weights: set ckpt.init_from (\"1.5\", "
                          "\"1.6\" or a U-Net file)")
    if cfg.run.get("trainable_modules"):
        raise ConfigError("lora.rank > 0 trains the adapters only: set run.trainable_modules=null (the adapted "
                          "projections are lora.target_modules)")
    targets = [str(t) for t in cfg.lora.target_modules]
    unet.requires_grad_(False)
    config = LoraConfig(r=lora_rank(cfg), lora_alpha=lora_alpha(cfg), lora_dropout=float(cfg.lora.get("dropout", 0)),
                        target_modules=targets)
    inject_adapter_in_model(config, unet)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"lora.target_modules={targets} matches no layer of the U-Net")
    return trainable


def export_lora(state: dict, unet: torch.nn.Module, folder: Path, step: int, cfg: DictConfig) -> Path:
    """The adapter weights of the full state dict `state` as `folder/latentsync_lora.safetensors`."""
    from peft import get_peft_model_state_dict

    adapter = get_peft_model_state_dict(unet, state_dict=state)
    return save_lora(folder / LORA_FILE, adapter, lora_rank(cfg), lora_alpha(cfg), list(cfg.lora.target_modules),
                     global_step=step)
