"""Spatial transformer of the 3-D U-Net: SDPA attention, GEGLU feed-forward, per-frame Transformer3DModel."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import batch_to_frames, frames_to_batch, layers


class Attention(nn.Module):
    """Multi-head (cross-)attention with `F.scaled_dot_product_attention` (default scale 1/sqrt(head_dim)).

    `x (B, N, query_dim)`, `context (B, M, cross_attention_dim)` or None (self-attention) -> `(B, N, query_dim)`.
    q/k/v have no bias, the output projection has one (diffusers naming: `to_q`, `to_k`, `to_v`, `to_out.0`).
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        ops: Any = None,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        linear = layers(ops).Linear
        self.to_q = linear(query_dim, inner_dim, bias=bias)
        self.to_k = linear(cross_attention_dim or query_dim, inner_dim, bias=bias)
        self.to_v = linear(cross_attention_dim or query_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([linear(inner_dim, query_dim), nn.Dropout(dropout)])

    def attend(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b = q.shape[0]
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * out.shape[-1])
        return self.to_out[1](self.to_out[0](out))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, context)


class GEGLU(nn.Module):
    """`Linear(dim, 2*inner)` split into (h, gate); `h * GELU(gate)` with the exact (erf) GELU."""

    def __init__(self, dim_in: int, dim_out: int, ops: Any = None):
        super().__init__()
        self.proj = layers(ops).Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU -> Dropout -> Linear (keys `net.0.proj`, `net.2`); inner width `mult * dim`.

    `chunks > 1` runs the tokens through in that many pieces (every token is independent), so the widest
    activation of the block (the GEGLU projection, 8 x dim per token) exists for one piece at a time.
    """

    chunks: int = 1

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, ops: Any = None):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner, ops), nn.Dropout(dropout), layers(ops).Linear(inner, dim)])

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunks <= 1:
            return self._run(x)
        rows = x.reshape(-1, x.shape[-1])
        out = None
        start = 0
        for piece in rows.tensor_split(min(self.chunks, rows.shape[0])):
            y = self._run(piece)
            if out is None:
                out = y.new_empty(rows.shape[0], y.shape[-1])
            out[start:start + piece.shape[0]] = y
            start += piece.shape[0]
        return out.reshape(*x.shape[:-1], out.shape[-1])


class BasicTransformerBlock(nn.Module):
    """Self-attention, optional audio cross-attention, GEGLU FF; pre-LayerNorm residuals. `(B, N, dim)`."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        cross_attention_dim: int | None = None,
        add_audio_layer: bool = False,
        dropout: float = 0.0,
        ops: Any = None,
    ):
        super().__init__()
        layer_norm = layers(ops).LayerNorm
        # Registration order reproduces the official state-dict order: norm1, attn1, norm2, attn2, ff, norm3.
        self.norm1 = layer_norm(dim)
        self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim, dropout=dropout, ops=ops)
        if add_audio_layer:
            self.norm2 = layer_norm(dim)
            self.attn2 = Attention(dim, cross_attention_dim, heads=num_attention_heads, dim_head=attention_head_dim,
                                   dropout=dropout, ops=ops)
        else:
            self.norm2 = None
            self.attn2 = None
        self.ff = FeedForward(dim, dropout=dropout, ops=ops)
        self.norm3 = layer_norm(dim)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and encoder_hidden_states is not None:
            x = self.attn2(self.norm2(x), encoder_hidden_states) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Spatial transformer applied per frame (GroupNorm statistics per frame, eps 1e-6).

    `(b, c, f, h, w)`, audio context `(b*f, 50, cross_dim)` -> `(b, c, f, h, w)`.
    """

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        in_channels: int,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = None,
        add_audio_layer: bool = False,
        dropout: float = 0.0,
        ops: Any = None,
    ):
        super().__init__()
        L = layers(ops)
        inner_dim = num_attention_heads * attention_head_dim
        self.norm = L.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = L.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    cross_attention_dim=cross_attention_dim,
                    add_audio_layer=add_audio_layer,
                    dropout=dropout,
                    ops=ops,
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = L.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        num_frames = hidden_states.shape[2]
        x = frames_to_batch(hidden_states)
        residual = x
        bf, _, h, w = x.shape
        x = self.proj_in(self.norm(x))
        inner = x.shape[1]
        x = x.permute(0, 2, 3, 1).reshape(bf, h * w, inner)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states)
        x = x.reshape(bf, h, w, inner).permute(0, 3, 1, 2).contiguous()
        x = self.proj_out(x) + residual
        return batch_to_frames(x, num_frames)
