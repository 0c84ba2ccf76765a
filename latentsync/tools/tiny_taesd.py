"""A randomly initialised TAESD (tiny SD-1.5 autoencoder) saved as one VAE file that ComfyUI's own Load VAE reads.

ComfyUI's Load VAE builds the full-size SD VAE for LDM-format files whatever their widths, and a full-size VAE
takes ~20 s per 256 px frame on a 2-core CPU. A file whose keys are `taesd_encoder.*` / `taesd_decoder.*` plus
`vae_scale` / `vae_shift` is loaded as TAESD instead (same 4-channel latent space, ~1 M parameters), which is what
the tiny model set uses so the native Load VAE node can be exercised in tests. Layout as madebyollin/taesd.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

SD15_SCALING = 0.18215


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()


def _encoder(latent_channels: int = 4) -> nn.Sequential:
    b = lambda: _Block(64, 64)  # noqa: E731
    return nn.Sequential(
        _conv(3, 64), b(),
        _conv(64, 64, stride=2, bias=False), b(), b(), b(),
        _conv(64, 64, stride=2, bias=False), b(), b(), b(),
        _conv(64, 64, stride=2, bias=False), b(), b(), b(),
        _conv(64, latent_channels),
    )


def _decoder(latent_channels: int = 4) -> nn.Sequential:
    b = lambda: _Block(64, 64)  # noqa: E731
    return nn.Sequential(
        nn.Identity(), _conv(latent_channels, 64), nn.ReLU(),
        b(), b(), b(), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        b(), b(), b(), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        b(), b(), b(), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        b(), _conv(64, 3),
    )


def save_random_taesd(path: Path, seed: int = 0) -> Path:
    """Write a random TAESD as a single ComfyUI-loadable VAE file (safetensors)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix, module in (("taesd_encoder.", _encoder()), ("taesd_decoder.", _decoder())):
        for name, tensor in module.state_dict().items():
            if tensor.ndim == 1:  # biases
                state[prefix + name] = torch.zeros(tensor.shape)
            else:
                state[prefix + name] = torch.randn(tensor.shape, generator=gen) / tensor[0].numel() ** 0.5
    state["vae_scale"] = torch.tensor(SD15_SCALING)
    state["vae_shift"] = torch.tensor(0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    return path
