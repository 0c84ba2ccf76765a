"""DDIM sampling with classifier-free guidance and DeepCache."""
from ..lazy import lazy_exports

_MODULES = {
    ".ddim": ("make_scheduler", "scheduler_config"),
    ".deepcache": ("DeepCache",),
    ".denoise": ("denoise_window", "initial_noise"),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, _MODULES)
