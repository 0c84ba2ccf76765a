"""AnimateDiff-v1 style motion module: temporal self-attention over the frames at every spatial position."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .attention import Attention, FeedForward
from .layers import batch_to_frames, frames_to_batch, layers


def sinusoidal_position_table(d_model: int, max_len: int) -> torch.Tensor:
    """`(1, max_len, d_model)` float32: `pe[0, p, 2i] = sin(p / 10000^(2i/d))`, `pe[0, p, 2i+1] = cos(...)`.

    Computed with the same operations as the official buffer, so a recomputed table is bit-identical.
    """
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(1, max_len, d_model)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal table to `(B, f, C)`; the table is the persistent buffer `pe` `(1, max_len, C)`."""

    def __init__(self, d_model: int, max_len: int = 24):
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(d_model, max_len))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(
                f"{x.shape[1]} frames exceed the motion module's temporal_position_encoding_max_len "
                f"{self.pe.shape[1]}; process at most {self.pe.shape[1]} frames per window"
            )
        # ComfyUI's partial loading moves only weights: the buffer may still be on the CPU
        return x + self.pe[:, : x.shape[1]].to(device=x.device, dtype=x.dtype)


class TemporalAttention(Attention):
    """Self-attention across frames (official "VersatileAttention", mode Temporal).

    `(b*f, s, C) -> (b*s, f, C)`, + PE, attend over f, back to `(b*f, s, C)`. Keys: `to_q/k/v`, `to_out.0`,
    `pos_encoder.pe` (registered after the projections, as in the official state dict).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, position_encoding: bool = True,
                 max_len: int = 24, ops: Any = None):
        super().__init__(dim, heads=heads, dim_head=dim_head, dropout=dropout, ops=ops)
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        bf, s, c = x.shape
        x = x.unflatten(0, (bf // num_frames, num_frames)).transpose(1, 2).reshape(-1, num_frames, c)  # (b s) f c
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        x = self.attend(x)
        return x.unflatten(0, (bf // num_frames, s)).transpose(1, 2).reshape(bf, s, c)


class TemporalTransformerBlock(nn.Module):
    """Temporal self-attentions (each with its own LayerNorm) then a GEGLU FF. `(b*f, s, C)`."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, num_attention_blocks: int = 2,
                 position_encoding: bool = True, max_len: int = 24, dropout: float = 0.0, ops: Any = None):
        super().__init__()
        layer_norm = layers(ops).LayerNorm
        self.attention_blocks = nn.ModuleList(
            [
                TemporalAttention(dim, num_attention_heads, attention_head_dim, dropout, position_encoding, max_len,
                                  ops=ops)
                for _ in range(num_attention_blocks)
            ]
        )
        self.norms = nn.ModuleList([layer_norm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, dropout=dropout, ops=ops)
        self.ff_norm = layer_norm(dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """Per-frame GroupNorm(32, eps 1e-6) -> Linear in -> temporal blocks -> Linear out -> + residual."""

    def __init__(self, in_channels: int, num_attention_heads: int, attention_head_dim: int, num_layers: int = 1,
                 num_attention_blocks: int = 2, position_encoding: bool = True, max_len: int = 24,
                 norm_num_groups: int = 32, ops: Any = None):
        super().__init__()
        L = layers(ops)
        inner_dim = num_attention_heads * attention_head_dim
        self.norm = L.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = L.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(inner_dim, num_attention_heads, attention_head_dim, num_attention_blocks,
                                         position_encoding, max_len, ops=ops)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = L.Linear(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_frames = hidden_states.shape[2]
        x = frames_to_batch(hidden_states)
        residual = x
        bf, c, h, w = x.shape
        x = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x)
        x = x.reshape(bf, h, w, -1).permute(0, 3, 1, 2).contiguous() + residual
        return batch_to_frames(x, num_frames)


class VanillaTemporalModule(nn.Module):
    """Motion module wrapper (key prefix `temporal_transformer.`). `(b, c, f, h, w) -> same`."""

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 2,
        attention_block_types: tuple[str, ...] | list[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
        cross_frame_attention_mode: None = None,
        ops: Any = None,
    ):
        super().__init__()
        unsupported = [t for t in attention_block_types if t != "Temporal_Self"]
        if unsupported:
            raise ValueError(f"unsupported motion-module attention_block_types {unsupported}; only 'Temporal_Self'")
        if cross_frame_attention_mode is not None:
            raise ValueError("cross_frame_attention_mode is not supported (LatentSync never sets it)")
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            num_attention_heads,
            in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block,
            num_attention_blocks=len(attention_block_types),
            position_encoding=temporal_position_encoding,
            max_len=temporal_position_encoding_max_len,
            ops=ops,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        # temb / encoder_hidden_states are accepted for the official call signature; Temporal_Self ignores them.
        return self.temporal_transformer(hidden_states)
