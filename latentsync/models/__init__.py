"""The LatentSync 3-D U-Net and its checkpoint I/O."""
from ..lazy import lazy_exports

_MODULES = {
    ".checkpoint": ("CheckpointError", "infer_unet_config", "load_unet", "load_unet_state_dict",
        "save_unet_checkpoint"),
    ".unet_3d": ("DEFAULT_CONFIG", "UNet3DConditionModel", "resolve_unet_config"),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, _MODULES)
