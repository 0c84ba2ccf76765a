"""The U-Net being trained: built from a named config of `latentsync/configs/unet/` plus overrides, initialised
from a released or own checkpoint (`training.init_weights`), and exported as checkpoints the node pack loads."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from latentsync import hub
from latentsync.config import unet_config
from latentsync.models.checkpoint import load_unet_state_dict, save_unet_checkpoint
from latentsync.models.unet_3d import UNet3DConditionModel, resolve_unet_config

from .init_weights import InitReport, fresh_init, load_initial_weights

VERSION_OF_RESOLUTION = {256: "1.5", 512: "1.6"}


def model_config(cfg: DictConfig) -> dict:
    """`model.base` (stage1, stage2, stage2_512, stage2_efficient) updated with the other `model.*` keys."""
    section = OmegaConf.to_container(cfg.model, resolve=True)
    base = section.pop("base", "stage2")
    merged = dict(unet_config(base))
    for key, value in section.items():
        if key == "motion_module_kwargs":
            value = {**merged.get(key, {}), **value}
        merged[key] = value
    return resolve_unet_config(merged)


def init_checkpoint(cfg: DictConfig, models_root: Path) -> Path | None:
    """`ckpt.init_from`: null (fresh init), "1.5" / "1.6" (the released U-Net from the models folder, downloaded
    when allowed) or a file."""
    choice = cfg.ckpt.get("init_from")
    if choice in (None, ""):
        return None
    if str(choice) in hub.VERSIONS:
        return hub.locate_file(models_root, hub.unet_file(str(choice)), download=bool(cfg.models.download))
    path = Path(str(choice)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt.init_from={path}: file not found")
    return path


def build_unet(cfg: DictConfig, models_root: Path, seed: int) -> tuple[UNet3DConditionModel, InitReport]:
    """The U-Net in fp32 on the CPU (the accelerator moves it) and what it was initialised from. Fresh init uses a
    private seed, so every process builds the same weights."""
    config = model_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(**config)
    path = init_checkpoint(cfg, models_root)
    if path is None:
        return unet, fresh_init(unet)
    return unet, load_initial_weights(unet, load_unet_state_dict(path), str(path))


def checkpoint_name(resolution: int) -> str:
    """`latentsync_unet-v1.5.pt` / `-v1.6.pt`: the node pack's loader reads the version from the name."""
    return f"latentsync_unet-v{VERSION_OF_RESOLUTION.get(int(resolution), '1.5')}.pt"


def export_checkpoint(state: dict[str, torch.Tensor], config: dict, folder: Path, step: int, resolution: int,
                      safetensors: bool = False) -> Path:
    """Official format `{"global_step", "state_dict"}` (+ `.safetensors` on request) of the full state dict `state`,
    and our `unet_config.yaml` (from the model's `config`) beside it, so the node pack's loader lists and builds it
    as is."""
    path = save_unet_checkpoint(state, folder / checkpoint_name(resolution), global_step=step)
    if safetensors:
        save_unet_checkpoint(state, path.with_suffix(".safetensors"), global_step=step)
    text = "# LatentSync U-Net trained with training.train_unet; flat model config\n"
    text += yaml.safe_dump(dict(config), sort_keys=True)
    (folder / hub.UNET_CONFIG_NAME).write_text(text, encoding="utf-8")
    return path
