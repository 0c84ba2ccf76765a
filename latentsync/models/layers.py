"""Small shared layers: per-frame ("inflated") 2-D convolution, the GroupNorm precision rule, and the layer set
(`ops`) every model block is built from.

`ops` is a namespace with the classes `Linear`, `Conv2d`, `GroupNorm` and `LayerNorm` (default: `torch.nn`). A host
application passes its own (ComfyUI: `comfy.ops.disable_weight_init`, whose layers can stream their weights from
the CPU when the GPU is small); the state-dict names do not depend on it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)
# Devices whose fp16/bf16 GroupNorm kernels accumulate in float32 (measured: CPU, torch 2.14, max error equal to
# float32 statistics within one output rounding step; CUDA: the official code runs its norms in fp16 there). "meta"
# is the shape-only device the memory estimate traces on; it behaves as CUDA.
NATIVE_HALF_NORM_DEVICES = frozenset({"cuda", "cpu", "meta"})


def group_norm_in_float32(dtype: torch.dtype, device_type: str) -> bool:
    """True when a GroupNorm on a `dtype` tensor on `device_type` computes its statistics in float32.

    Only for fp16/bf16 on devices not measured here (MPS, XPU, ...): elsewhere the norm runs in the model's dtype,
    as the official code does on CUDA.
    """
    return dtype in HALF_DTYPES and device_type not in NATIVE_HALF_NORM_DEVICES


TORCH_OPS = SimpleNamespace(Linear=nn.Linear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)


@dataclass(frozen=True)
class Layers:
    """The classes the U-Net is built from, derived from one `ops` namespace."""

    Linear: type
    Conv2d: type
    LayerNorm: type
    GroupNorm: type  # with the precision rule of `group_norm_in_float32`
    InflatedConv3d: type  # Conv2d applied to every frame of a (b, c, f, h, w) tensor


def _group_norm_class(base: type) -> type:
    class GroupNorm(base):
        """GroupNorm with the precision rule of `group_norm_in_float32`. Applied to a 5-D `(b, c, f, h, w)` tensor
        the statistics are pooled over all frames (official resnet quirk); callers that want per-frame statistics
        fold frames into the batch first."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if group_norm_in_float32(x.dtype, x.device.type):
                weight = None if self.weight is None else self.weight.to(device=x.device, dtype=torch.float32)
                bias = None if self.bias is None else self.bias.to(device=x.device, dtype=torch.float32)
                return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
            return super().forward(x)

    GroupNorm.__qualname__ = GroupNorm.__name__
    return GroupNorm


def _inflated_conv_class(base: type) -> type:
    class InflatedConv3d(base):
        """`Conv2d` applied to every frame: `(b, c, f, h, w) -> (b, c', f, h', w')`. No temporal mixing."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, _, f, _, _ = x.shape
            x = super().forward(frames_to_batch(x))
            return x.unflatten(0, (b, f)).transpose(1, 2)

    InflatedConv3d.__qualname__ = InflatedConv3d.__name__
    return InflatedConv3d


@functools.lru_cache(maxsize=None)
def _layers(linear: type, conv2d: type, group_norm: type, layer_norm: type) -> Layers:
    return Layers(Linear=linear, Conv2d=conv2d, LayerNorm=layer_norm, GroupNorm=_group_norm_class(group_norm),
                  InflatedConv3d=_inflated_conv_class(conv2d))


def layers(ops: Any = None) -> Layers:
    """The layer classes for `ops` (None: `torch.nn`); the same classes for the same namespace."""
    ops = TORCH_OPS if ops is None else ops
    missing = [n for n in ("Linear", "Conv2d", "GroupNorm", "LayerNorm") if not hasattr(ops, n)]
    if missing:
        raise TypeError(f"ops {ops!r} lacks the layer classes {missing}")
    return _layers(ops.Linear, ops.Conv2d, ops.GroupNorm, ops.LayerNorm)


GroupNorm = layers().GroupNorm
InflatedConv3d = layers().InflatedConv3d


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """`(b, c, f, h, w) -> (b*f, c, h, w)`."""
    return x.transpose(1, 2).flatten(0, 1)


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(b*f, c, h, w) -> (b, c, f, h, w)`."""
    return x.unflatten(0, (-1, num_frames)).transpose(1, 2)
