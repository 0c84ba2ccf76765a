"""The U-Net being trained: built from a named config of `latentsync/configs/unet/` plus overrides, initialised
from a released or own checkpoint (a stage-1 file into a stage-2 model: the missing motion modules keep their
zero-initialised output, i.e. start as identities), and exported as checkpoints the node pack loads."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from latentsync import hub
from latentsync.config import unet_config
from latentsync.models.checkpoint import CheckpointError, load_unet_state_dict, save_unet_checkpoint
from latentsync.models.unet_3d import UNet3DConditionModel, resolve_unet_config

LOG = logging.getLogger("latentsync.training")
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


def build_unet(cfg: DictConfig, models_root: Path, seed: int) -> UNet3DConditionModel:
    """The U-Net in fp32 on the CPU (the accelerator moves it). Fresh init uses a private seed, so every process
    builds the same weights."""
    config = model_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(**config)
    path = init_checkpoint(cfg, models_root)
    if path is not None:
        load_initial_weights(unet, load_unet_state_dict(path), str(path))
    return unet


def load_initial_weights(unet: UNet3DConditionModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict, except that a file without motion modules may initialise a model with them (stage 1 -> 2)."""
    expected = unet.state_dict()
    file_has_mm = any(".motion_modules." in k for k in state)
    missing = [k for k in expected if k not in state and not k.endswith("pos_encoder.pe")]
    allowed = [k for k in missing if ".motion_modules." in k and not file_has_mm]
    missing = [k for k in missing if k not in set(allowed)]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source} does not fit the training model config: missing {missing[:3]} "
                              f"({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)}), shape mismatches "
                              f"{shapes[:3]} ({len(shapes)}). Check model.base against the file.")
    unet.load_state_dict({k: v for k, v in state.items() if not k.endswith("pos_encoder.pe")}, strict=False)
    if allowed:
        LOG.info("%s has no motion modules: %d motion-module tensors start from their zero-initialised state",
                 source, len(allowed))


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
