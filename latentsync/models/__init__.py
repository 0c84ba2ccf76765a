"""The LatentSync 3-D U-Net and its checkpoint I/O."""
from .checkpoint import CheckpointError, infer_unet_config, load_unet, load_unet_state_dict, save_unet_checkpoint
from .unet_3d import DEFAULT_CONFIG, UNet3DConditionModel, resolve_unet_config

__all__ = [
    "DEFAULT_CONFIG",
    "CheckpointError",
    "UNet3DConditionModel",
    "infer_unet_config",
    "load_unet",
    "load_unet_state_dict",
    "resolve_unet_config",
    "save_unet_checkpoint",
]
