"""SyncNet-v2 ("S" of joonson/syncnet_python), the evaluation network behind LSE-C / LSE-D, and its safe loader.

Two encoders into one 1024-d space, where in-sync lips and speech lie close together:

* lips: 5 colour frames of the 224x224 face crop, ``(N, 3, 5, 224, 224)`` float **0..255, BGR** channel order (what
  the official evaluation feeds: OpenCV-decoded frames, not normalised) -> 3-D conv trunk (512) -> FC -> 1024;
* audio: 20 MFCC frames (0.2 s at 100 Hz), ``(N, 1, 13, 20)`` -> 2-D conv trunk (512) -> FC -> 1024.

The module tree reproduces the official ``state_dict`` names (``netcnnaud.{i}``, ``netfcaud.{i}``, ``netfclip.{i}``,
``netcnnlip.{i}``: `nn.Sequential` indices, pooling/ReLU layers included), so the official ``syncnet_v2.model``
(102 entries, 13,631,616 parameters) loads unchanged. BatchNorm must run in eval mode (running statistics), as the
official ``evaluate()`` sets; `load_syncnet_v2` returns the model in eval mode.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..state_dict_keys import key_problems, unwrap_state_dict

EMBED_DIM = 1024
NUM_PARAMETERS = 13_631_616
NUM_STATE_DICT_ENTRIES = 102
LIP_FRAMES = 5  # frames per visual window
AUDIO_STEPS = 20  # MFCC frames per audio window (4 per video frame at 25 fps)
NUM_CEPSTRA = 13
CROP_SIZE = 224


class SyncNetLoadError(RuntimeError):
    """A file cannot be loaded as SyncNet-v2 weights (unsafe content, wrong keys or shapes)."""


def _conv_block(conv: nn.Module, channels: int, bn: type[nn.Module]) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


def audio_trunk() -> nn.Sequential:
    """(N, 1, 13, 20) MFCC window -> (N, 512, 1, 1). Indices: convs 0, 4, 8, 11, 14, 18; BatchNorms one after each."""
    bn = nn.BatchNorm2d
    return nn.Sequential(
        *_conv_block(nn.Conv2d(1, 64, 3, padding=1), 64, bn), nn.MaxPool2d(1, 1),
        *_conv_block(nn.Conv2d(64, 192, 3, padding=1), 192, bn), nn.MaxPool2d(3, (1, 2)),
        *_conv_block(nn.Conv2d(192, 384, 3, padding=1), 384, bn),
        *_conv_block(nn.Conv2d(384, 256, 3, padding=1), 256, bn),
        *_conv_block(nn.Conv2d(256, 256, 3, padding=1), 256, bn), nn.MaxPool2d(3, 2),
        *_conv_block(nn.Conv2d(256, 512, (5, 4)), 512, bn),
    )


def lip_trunk() -> nn.Sequential:
    """(N, 3, 5, 224, 224) frames -> (N, 512, 1, 1, 1). The first conv spans all 5 frames; the rest is per frame."""
    bn = nn.BatchNorm3d
    return nn.Sequential(
        *_conv_block(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, bn),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_block(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, bn),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_block(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn),
    )


def embedding_head(embed_dim: int = EMBED_DIM) -> nn.Sequential:
    """512 trunk features -> embed_dim (Linear, BatchNorm1d, ReLU, Linear)."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetV2(nn.Module):
    """The official SyncNet-v2 architecture; state-dict names are the official ones."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        # Registration order = the official state_dict order.
        self.netcnnaud = audio_trunk()
        self.netfcaud = embedding_head(embed_dim)
        self.netfclip = embedding_head(embed_dim)
        self.netcnnlip = lip_trunk()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024) audio embeddings."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lipfeat(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 -> (N, 512) conv-trunk features."""
        return self.netcnnlip(frames).flatten(1)

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 -> (N, 1024) lip embeddings."""
        return self.netfclip(self.forward_lipfeat(frames))

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_lip(frames), self.forward_aud(mfcc)


def read_syncnet_v2_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a SyncNet-v2 file, read safely (``weights_only=True``).

    The official ``syncnet_v2.model`` is a pickled plain ``{name: tensor}`` dict (old PyTorch format); a
    ``{"state_dict": ...}`` wrapper and a ``module.`` / ``__S__.`` prefix (DDP / the official wrapper) are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet-v2 weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SyncNetLoadError(
            f"refusing to load {path}: torch.load(weights_only=True) rejected it ({first}). The official "
            "syncnet_v2.model is a plain state dict of tensors and loads this way; this file also holds other "
            "Python objects (for example a whole pickled model), which could run arbitrary code when unpickled. "
            "Use the official file, or re-save just the weights: torch.save(model.state_dict(), path)."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise SyncNetLoadError(f"cannot read {path} as a torch file ({type(exc).__name__}: {exc}); the file may "
                               "be truncated or not SyncNet-v2 weights — delete it and download it again") from exc
    return unwrap_state_dict(obj, path, SyncNetLoadError, prefixes=("module.", "__S__."))


def load_syncnet_v2(path: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> SyncNetV2:
    """SyncNet-v2 from ``path`` (strict key and shape check), in eval mode on ``device``.

    Missing ``num_batches_tracked`` counters are tolerated (files saved by old PyTorch lack them; eval mode never
    reads them); any other missing or unexpected key, or a wrong shape, raises `SyncNetLoadError` naming it.
    """
    state = read_syncnet_v2_state_dict(path)
    net = SyncNetV2()
    problems = key_problems(net.state_dict(), state, optional_suffixes=("num_batches_tracked",))
    if problems:
        raise SyncNetLoadError(f"{path} is not a SyncNet-v2 state dict: " + "; ".join(problems))
    converted = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    net.load_state_dict(converted, strict=False)  # strictness checked above (num_batches_tracked may be absent)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)

