"""DDIM sampling with classifier-free guidance and DeepCache."""
from .ddim import make_scheduler, scheduler_config
from .deepcache import DeepCache
from .denoise import denoise_window, initial_noise

__all__ = ["DeepCache", "denoise_window", "initial_noise", "make_scheduler", "scheduler_config"]
