"""Down, mid and up blocks of the 3-D U-Net. Each layer = resnet -> (spatial transformer) -> (motion module)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Transformer3DModel
from .motion_module import VanillaTemporalModule
from .resnet import Downsample3D, ResnetBlock3D, Upsample3D


def mark_frames_dynamic(args: tuple[Any, ...]) -> None:
    """Tell `torch.compile` that the frame count may change between calls (the last window of a video is
    shorter): dim 2 of `(b, c, f, h, w)` tensors and dim 0 of the `(b*f, tokens, dim)` audio context."""
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.dim() in (3, 5):
            torch._dynamo.maybe_mark_dynamic(arg, 2 if arg.dim() == 5 else 0)


class _Checkpointable(nn.Module):
    """Runs sub-modules through activation checkpointing when enabled and training; with `dynamic_frames` (set
    when the sub-modules are compiled) their inputs' frame count is marked dynamic."""

    gradient_checkpointing: bool = False
    dynamic_frames: bool = False

    def _run(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if self.dynamic_frames:
            mark_frames_dynamic(args)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


def _motion_module(use: bool, channels: int, kwargs: dict | None, ops: Any = None) -> VanillaTemporalModule | None:
    return VanillaTemporalModule(channels, **(kwargs or {}), ops=ops) if use else None


class _LayeredBlock(_Checkpointable):
    """Shared layer logic; subclasses build `resnets`, optional `attentions`, `motion_modules`."""

    # Subclasses set `self.attentions` (ModuleList or None), `self.resnets`, `self.motion_modules` in __init__
    # (no class-level defaults: a class attribute would shadow the registered sub-module).

    def layer(self, i: int, hidden_states: torch.Tensor, temb: torch.Tensor,
              encoder_hidden_states: torch.Tensor | None) -> torch.Tensor:
        """Layer `i`: resnet -> spatial transformer (if any) -> motion module (if any)."""
        hidden_states = self._run(self.resnets[i], hidden_states, temb)
        if self.attentions is not None:
            hidden_states = self._run(self.attentions[i], hidden_states, encoder_hidden_states)
        mm = self.motion_modules[i]
        if mm is not None:
            hidden_states = self._run(mm, hidden_states)
        return hidden_states


class _DownBlock(_LayeredBlock):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, add_downsample: bool,
                 cross_attention: bool, resnet_eps: float = 1e-5, resnet_groups: int = 32,
                 resnet_time_scale_shift: str = "default", output_scale_factor: float = 1.0,
                 downsample_padding: int = 1, attn_num_head_channels: int = 8, cross_attention_dim: int | None = None,
                 add_audio_layer: bool = False, use_motion_module: bool = False,
                 motion_module_kwargs: dict | None = None, dropout: float = 0.0, ops: Any = None):
        super().__init__()
        self.attentions = None
        if cross_attention:
            self.attentions = nn.ModuleList(
                [
                    Transformer3DModel(attn_num_head_channels, out_channels // attn_num_head_channels, out_channels,
                                       norm_num_groups=resnet_groups, cross_attention_dim=cross_attention_dim,
                                       add_audio_layer=add_audio_layer, ops=ops)
                    for _ in range(num_layers)
                ]
            )
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, temb_channels, resnet_groups,
                              resnet_eps, dropout, resnet_time_scale_shift, output_scale_factor, ops=ops)
                for i in range(num_layers)
            ]
        )
        self.motion_modules = nn.ModuleList(
            [_motion_module(use_motion_module, out_channels, motion_module_kwargs, ops) for _ in range(num_layers)]
        )
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, out_channels, padding=downsample_padding, ops=ops)])
            if add_downsample
            else None
        )

    @property
    def num_outputs(self) -> int:
        """Skip tensors this block contributes: one per layer plus one after the downsampler."""
        return len(self.resnets) + (1 if self.downsamplers is not None else 0)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None,
                max_outputs: int | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """`-> (hidden_states, skip tensors)`; `max_outputs` stops early (DeepCache needs only the shallow skips)."""
        limit = self.num_outputs if max_outputs is None else max_outputs
        outputs: tuple[torch.Tensor, ...] = ()
        for i in range(len(self.resnets)):
            if len(outputs) >= limit:
                return hidden_states, outputs
            hidden_states = self.layer(i, hidden_states, temb, encoder_hidden_states)
            outputs += (hidden_states,)
        if self.downsamplers is not None and len(outputs) < limit:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            outputs += (hidden_states,)
        return hidden_states, outputs


_ATTENTION_KWARGS = ("attn_num_head_channels", "cross_attention_dim", "add_audio_layer")


def _without_attention_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Blocks without attention accept (and ignore) the attention settings the U-Net passes to every block."""
    return {k: v for k, v in kwargs.items() if k not in _ATTENTION_KWARGS}


class CrossAttnDownBlock3D(_DownBlock):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, cross_attention=True, **kwargs)


class DownBlock3D(_DownBlock):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs = _without_attention_kwargs(kwargs)
        super().__init__(*args, cross_attention=False, **kwargs)


class _UpBlock(_LayeredBlock):
    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 num_layers: int, add_upsample: bool, cross_attention: bool, resnet_eps: float = 1e-5,
                 resnet_groups: int = 32, resnet_time_scale_shift: str = "default",
                 output_scale_factor: float = 1.0, attn_num_head_channels: int = 8,
                 cross_attention_dim: int | None = None, add_audio_layer: bool = False,
                 use_motion_module: bool = False, motion_module_kwargs: dict | None = None, dropout: float = 0.0,
                 ops: Any = None):
        super().__init__()
        self.attentions = None
        if cross_attention:
            self.attentions = nn.ModuleList(
                [
                    Transformer3DModel(attn_num_head_channels, out_channels // attn_num_head_channels, out_channels,
                                       norm_num_groups=resnet_groups, cross_attention_dim=cross_attention_dim,
                                       add_audio_layer=add_audio_layer, ops=ops)
                    for _ in range(num_layers)
                ]
            )
        resnets = []
        for i in range(num_layers):
            res_skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            resnets.append(
                ResnetBlock3D(resnet_in_channels + res_skip_channels, out_channels, temb_channels, resnet_groups,
                              resnet_eps, dropout, resnet_time_scale_shift, output_scale_factor, ops=ops)
            )
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = nn.ModuleList(
            [_motion_module(use_motion_module, out_channels, motion_module_kwargs, ops) for _ in range(num_layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels, out_channels, ops=ops)]) if add_upsample else None

    def layer_with_skip(self, i: int, hidden_states: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor,
                        encoder_hidden_states: torch.Tensor | None) -> torch.Tensor:
        """Layer `i` on `cat([hidden_states, skip], channels)`."""
        return self.layer(i, torch.cat([hidden_states, skip], dim=1), temb, encoder_hidden_states)

    def upsample(self, hidden_states: torch.Tensor, upsample_size: tuple[int, ...] | None = None) -> torch.Tensor:
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states

    def forward(self, hidden_states: torch.Tensor, res_hidden_states_tuple: tuple[torch.Tensor | None, ...],
                temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                upsample_size: tuple[int, ...] | None = None, start_layer: int = 0,
                on_layer_input: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Layer `i` consumes skip `res_hidden_states_tuple[n - 1 - i]` (deepest first), then the upsampler.

        `start_layer` skips the first layers (DeepCache: `hidden_states` is then the cached input of that layer;
        skips of skipped layers may be None); `on_layer_input(i, h)` sees each layer's input before the concat.
        """
        n = len(self.resnets)
        if len(res_hidden_states_tuple) != n:
            raise ValueError(f"up block expects {n} skip tensors, got {len(res_hidden_states_tuple)}")
        for i in range(start_layer, n):
            if on_layer_input is not None:
                on_layer_input(i, hidden_states)
            hidden_states = self.layer_with_skip(i, hidden_states, res_hidden_states_tuple[n - 1 - i], temb,
                                                 encoder_hidden_states)
        return self.upsample(hidden_states, upsample_size)


class CrossAttnUpBlock3D(_UpBlock):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, cross_attention=True, **kwargs)


class UpBlock3D(_UpBlock):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs = _without_attention_kwargs(kwargs)
        super().__init__(*args, cross_attention=False, **kwargs)


class UNetMidBlock3DCrossAttn(_Checkpointable):
    """resnet -> (transformer -> motion module -> resnet) x num_layers, constant width."""

    def __init__(self, in_channels: int, temb_channels: int, num_layers: int = 1, resnet_eps: float = 1e-5,
                 resnet_groups: int = 32, resnet_time_scale_shift: str = "default",
                 output_scale_factor: float = 1.0, attn_num_head_channels: int = 8,
                 cross_attention_dim: int | None = None, add_audio_layer: bool = False,
                 use_motion_module: bool = False, motion_module_kwargs: dict | None = None, dropout: float = 0.0,
                 ops: Any = None):
        super().__init__()
        self.attentions = nn.ModuleList(
            [
                Transformer3DModel(attn_num_head_channels, in_channels // attn_num_head_channels, in_channels,
                                   norm_num_groups=resnet_groups, cross_attention_dim=cross_attention_dim,
                                   add_audio_layer=add_audio_layer, ops=ops)
                for _ in range(num_layers)
            ]
        )
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(in_channels, in_channels, temb_channels, resnet_groups, resnet_eps, dropout,
                              resnet_time_scale_shift, output_scale_factor, ops=ops)
                for _ in range(num_layers + 1)
            ]
        )
        self.motion_modules = nn.ModuleList(
            [_motion_module(use_motion_module, in_channels, motion_module_kwargs, ops) for _ in range(num_layers)]
        )

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = self._run(self.resnets[0], hidden_states, temb)
        for attn, mm, resnet in zip(self.attentions, self.motion_modules, self.resnets[1:]):
            hidden_states = self._run(attn, hidden_states, encoder_hidden_states)
            if mm is not None:
                hidden_states = self._run(mm, hidden_states)
            hidden_states = self._run(resnet, hidden_states, temb)
        return hidden_states


DOWN_BLOCKS = {"CrossAttnDownBlock3D": CrossAttnDownBlock3D, "DownBlock3D": DownBlock3D}
UP_BLOCKS = {"CrossAttnUpBlock3D": CrossAttnUpBlock3D, "UpBlock3D": UpBlock3D}
