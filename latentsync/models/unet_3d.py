"""`UNet3DConditionModel`: the LatentSync 3-D U-Net (SD-1.5 layout, audio cross-attention, motion modules)."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.embeddings import Timesteps
from torch import nn

from .attention import FeedForward, Transformer3DModel
from .layers import layers
from .motion_module import VanillaTemporalModule
from .resnet import ResnetBlock3D
from .unet_blocks import DOWN_BLOCKS, UP_BLOCKS, UNetMidBlock3DCrossAttn, _Checkpointable

if TYPE_CHECKING:
    from ..sampling.deepcache import DeepCache

DEFAULT_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 13,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 384,
    "attention_head_dim": 8,
    "resnet_time_scale_shift": "default",
    "add_audio_layer": True,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
        "zero_initialize": True,
    },
}

COMPILE_RECOMPILE_LIMIT = 64  # compiled variants per block class (one per width and frame-count range)

# Official constructor arguments that LatentSync leaves at these values; other values are not implemented.
_FIXED_ARGUMENTS: dict[str, Any] = {
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "upcast_attention": False,
    "use_inflated_groupnorm": False,
}


def resolve_unet_config(config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Defaults (= stage2 `model:` section) updated by `config` and `overrides`; `_`-prefixed keys are dropped."""
    merged = copy.deepcopy(DEFAULT_CONFIG)
    for source in (config or {}, overrides):
        for key, value in source.items():
            if key.startswith("_"):
                continue
            if key not in DEFAULT_CONFIG and key not in _FIXED_ARGUMENTS:
                raise TypeError(f"unknown UNet3DConditionModel config key {key!r}")
            if key in _FIXED_ARGUMENTS:
                if value != _FIXED_ARGUMENTS[key]:
                    raise ValueError(f"{key}={value!r} is not supported (LatentSync uses "
                                              f"{_FIXED_ARGUMENTS[key]!r})")
                continue
            if key == "motion_module_kwargs":
                value = {**DEFAULT_CONFIG["motion_module_kwargs"], **(value or {})}
            merged[key] = copy.deepcopy(value)
    merged["norm_eps"] = float(merged["norm_eps"])
    for key in ("block_out_channels", "down_block_types", "up_block_types", "motion_module_resolutions"):
        merged[key] = list(merged[key])
    return merged


class _SkipsUsedOnce:
    """The skip tensors of one up block, each handed out once and then dropped (as the official code pops them), so
    the large high-resolution skips do not stay alive while the block's later layers run."""

    def __init__(self, items: list[torch.Tensor | None]):
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        item, self._items[i] = self._items[i], None
        return item


class TimestepEmbedding(nn.Module):
    """`linear_1 -> SiLU -> linear_2` (diffusers' `TimestepEmbedding` as the U-Net uses it, built from `ops`)."""

    def __init__(self, in_channels: int, time_embed_dim: int, ops: Any = None):
        super().__init__()
        linear = layers(ops).Linear
        self.linear_1 = linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


class UNet3DConditionModel(_Checkpointable):
    """3-D conditional U-Net predicting noise.

    `forward(sample (b, in_ch, f, h, w), timestep (0-d, (1,) or (b,)), encoder_hidden_states (b, f, 50, D) or
    (b*f, 50, D), deep_cache=None) -> (b, out_ch, f, h, w)`. `ops` (not part of the config): the namespace of layer
    classes to build from (see `latentsync.models.layers`; default `torch.nn`).
    """

    def __init__(self, ops: Any = None, **config: Any):
        super().__init__()
        L = layers(ops)
        cfg = resolve_unet_config(config)
        self._config = cfg
        if cfg["act_fn"] != "silu":
            raise ValueError(f"act_fn {cfg['act_fn']!r} is not supported (only 'silu')")
        if cfg["mid_block_type"] != "UNetMidBlock3DCrossAttn":
            raise ValueError(f"mid_block_type {cfg['mid_block_type']!r} is not supported")
        if cfg["use_motion_module"] and cfg["motion_module_type"] != "Vanilla":
            raise ValueError(f"motion_module_type {cfg['motion_module_type']!r} is not supported")
        channels = cfg["block_out_channels"]
        if not (len(channels) == len(cfg["down_block_types"]) == len(cfg["up_block_types"])):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
        heads = cfg["attention_head_dim"]  # legacy diffusers naming: this is the number of heads
        time_embed_dim = channels[0] * 4
        mm_kwargs = cfg["motion_module_kwargs"]
        resolutions = cfg["motion_module_resolutions"]
        common = dict(resnet_eps=cfg["norm_eps"], resnet_groups=cfg["norm_num_groups"],
                      resnet_time_scale_shift=cfg["resnet_time_scale_shift"], attn_num_head_channels=heads,
                      cross_attention_dim=cfg["cross_attention_dim"], add_audio_layer=cfg["add_audio_layer"],
                      motion_module_kwargs=mm_kwargs, ops=ops)

        self.conv_in = L.InflatedConv3d(cfg["in_channels"], channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        self.time_embedding = TimestepEmbedding(channels[0], time_embed_dim, ops)

        self.down_blocks = nn.ModuleList()
        output_channel = channels[0]
        for i, block_type in enumerate(cfg["down_block_types"]):
            input_channel, output_channel = output_channel, channels[i]
            is_final = i == len(channels) - 1
            if block_type not in DOWN_BLOCKS:
                raise ValueError(f"unknown down block type {block_type!r}")
            self.down_blocks.append(DOWN_BLOCKS[block_type](
                input_channel, output_channel, time_embed_dim, cfg["layers_per_block"], not is_final,
                downsample_padding=cfg["downsample_padding"],
                use_motion_module=cfg["use_motion_module"] and (2**i in resolutions)
                and not cfg["motion_module_decoder_only"],
                **common,
            ))

        # Registered before mid_block to reproduce the official state-dict order (up_blocks precede mid_block).
        self.up_blocks = nn.ModuleList()
        self.num_upsamplers = 0
        reversed_channels = list(reversed(channels))
        output_channel = reversed_channels[0]
        for i, block_type in enumerate(cfg["up_block_types"]):
            is_final = i == len(channels) - 1
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(channels) - 1)]
            if block_type not in UP_BLOCKS:
                raise ValueError(f"unknown up block type {block_type!r}")
            if not is_final:
                self.num_upsamplers += 1
            self.up_blocks.append(UP_BLOCKS[block_type](
                input_channel, prev_output_channel, output_channel, time_embed_dim, cfg["layers_per_block"] + 1,
                not is_final,
                use_motion_module=cfg["use_motion_module"] and (2 ** (len(channels) - 1 - i) in resolutions),
                **common,
            ))

        self.mid_block = UNetMidBlock3DCrossAttn(
            channels[-1], time_embed_dim, output_scale_factor=cfg["mid_block_scale_factor"],
            use_motion_module=cfg["use_motion_module"] and cfg["motion_module_mid_block"], **common,
        )
        self.conv_norm_out = L.GroupNorm(cfg["norm_num_groups"], channels[0], eps=cfg["norm_eps"])
        self.conv_act = nn.SiLU()
        self.conv_out = L.InflatedConv3d(channels[0], cfg["out_channels"], kernel_size=3, padding=1)

        # Absolute index (in the skip list [conv_in, down outputs...]) of the first skip each up block consumes.
        total = 1 + sum(block.num_outputs for block in self.down_blocks)
        self._up_skip_start: list[int] = []
        for block in self.up_blocks:
            total -= len(block.resnets)
            self._up_skip_start.append(total)
        if total != 0:
            raise ValueError("down/up block layer counts do not pair up (skip connections left over)")

    # ------------------------------------------------------------------ config / utilities
    @classmethod
    def from_config(cls, config: dict[str, Any], ops: Any = None) -> "UNet3DConditionModel":
        return cls(ops=ops, **config)

    @property
    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint every resnet, spatial transformer and motion module during training."""
        for module in self.modules():
            if isinstance(module, _Checkpointable):
                module.gradient_checkpointing = enabled

    def disable_gradient_checkpointing(self) -> None:
        self.enable_gradient_checkpointing(False)

    def set_feed_forward_chunks(self, chunks: int) -> None:
        """Run every feed-forward (spatial and temporal) in `chunks` pieces of its tokens; 1 = in one piece.
        Same result (each token is independent), less peak memory: see `FeedForward`."""
        if int(chunks) != chunks or chunks < 1:
            raise ValueError(f"feed-forward chunks must be an integer >= 1, got {chunks!r}")
        for module in self.modules():
            if isinstance(module, FeedForward):
                module.chunks = int(chunks)

    def compile_blocks(self, backend: Any = "inductor", mode: str | None = None) -> int:
        """Compile every resnet, spatial transformer and motion module with `torch.compile` (in place: the
        state-dict names do not change), with their frame count marked dynamic, so that a shorter last window does
        not compile again and DeepCache (which skips whole blocks in Python) keeps working. Calling it again with
        the same settings does nothing. Returns the number of compiled modules."""
        setting = (backend if isinstance(backend, str) else id(backend), mode)
        if getattr(self, "_compiled_blocks", None) == setting:
            return 0
        count = 0
        for module in self.modules():
            if isinstance(module, (ResnetBlock3D, Transformer3DModel, VanillaTemporalModule)):
                module.compile(backend=backend, mode=mode, dynamic=None)
                count += 1
            elif isinstance(module, _Checkpointable):
                module.dynamic_frames = True
        self._compiled_blocks = setting
        return count

    @contextlib.contextmanager
    def feed_forward_chunks(self, chunks: int) -> Iterator[None]:
        """`set_feed_forward_chunks(chunks)` for the duration of a `with` block, then the previous setting."""
        before = {m: m.chunks for m in self.modules() if isinstance(m, FeedForward)}
        self.set_feed_forward_chunks(chunks)
        try:
            yield
        finally:
            for module, value in before.items():
                module.chunks = value

    # ------------------------------------------------------------------ forward
    def _timesteps(self, timestep: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1 or t.shape[0] not in (1, batch):
            raise ValueError(f"timestep must be 0-d, (1,) or (batch={batch},); got shape {tuple(t.shape)}")
        return t.to(device).expand(batch)

    @staticmethod
    def _audio_context(ehs: torch.Tensor | None, batch: int, frames: int, dtype: torch.dtype) -> torch.Tensor | None:
        """-> `(b*f, tokens, dim)`, one audio context per frame."""
        if ehs is None:
            return None
        if ehs.dim() == 4:
            if ehs.shape[:2] != (batch, frames):
                raise ValueError(f"encoder_hidden_states {tuple(ehs.shape)} does not match (batch={batch}, "
                                 f"frames={frames}, tokens, dim)")
            ehs = ehs.flatten(0, 1)
        elif ehs.dim() == 3:
            if ehs.shape[0] == batch and batch * frames != batch:
                ehs = ehs.repeat_interleave(frames, dim=0)  # one context per clip, shared by its frames
            elif ehs.shape[0] != batch * frames:
                raise ValueError(f"encoder_hidden_states {tuple(ehs.shape)}: expected first dim batch*frames="
                                 f"{batch * frames} (or batch={batch})")
        else:
            raise ValueError(f"encoder_hidden_states must be 3-D or 4-D, got shape {tuple(ehs.shape)}")
        return ehs.to(dtype)

    def deep_cache_target(self, branch: int) -> tuple[int, int]:
        """(up block, layer) whose input DeepCache stores for `branch` (= consumer of skip tensor `branch`)."""
        for bi, block in enumerate(self.up_blocks):
            start = self._up_skip_start[bi]
            n = len(block.resnets)
            if start <= branch < start + n:
                return bi, start + n - 1 - branch
        raise ValueError(f"DeepCache branch {branch} out of range (0..{self._up_skip_start[0] + len(self.up_blocks[0].resnets) - 1})")

    def _up_path(self, hidden_states: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor,
                 ctx: torch.Tensor | None, forward_upsample_size: bool, start: tuple[int, int] = (0, 0),
                 capture: tuple[int, int] | None = None, deep_cache: "DeepCache | None" = None) -> torch.Tensor:
        for bi in range(start[0], len(self.up_blocks)):
            block = self.up_blocks[bi]
            first = self._up_skip_start[bi]
            n = len(block.resnets)
            res = _SkipsUsedOnce([skips[j] if j < len(skips) else None for j in range(first, first + n)])
            del skips[first:]  # the list no longer holds them: each is freed once its layer has used it
            size = tuple(skips[first - 1].shape[2:]) if (forward_upsample_size and block.upsamplers) else None
            hook = None
            if capture is not None and capture[0] == bi:
                def hook(li: int, h: torch.Tensor, _layer: int = capture[1]) -> None:
                    if li == _layer:
                        deep_cache.store(h)
            hidden_states = block(hidden_states, res, temb, ctx, upsample_size=size,
                                  start_layer=start[1] if bi == start[0] else 0, on_layer_input=hook)
        return hidden_states

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int | float,
                encoder_hidden_states: torch.Tensor | None = None,
                deep_cache: "DeepCache | None" = None) -> torch.Tensor:
        """Predicted noise `(b, out_channels, f, h, w)`.

        With a `DeepCache` whose current step is a cached one, only the shallowest branch is recomputed from the
        hidden state stored on the last full step (official DeepCache 0.1.1 behaviour); full steps store it.
        """
        if getattr(self, "_compiled_blocks", None) is None:
            return self._forward(sample, timestep, encoder_hidden_states, deep_cache)
        # Blocks of one class share one compiled `forward` code object, each shape one entry of its cache: more
        # than dynamo's default limit of 8 (a stage-2 U-Net has 14 resnet shapes, twice once a window of fewer
        # than 8 frames came); raised only while this forward runs.
        with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit,
                                                            COMPILE_RECOMPILE_LIMIT)):
            return self._forward(sample, timestep, encoder_hidden_states, deep_cache)

    def _forward(self, sample: torch.Tensor, timestep: torch.Tensor | int | float,
                 encoder_hidden_states: torch.Tensor | None, deep_cache: "DeepCache | None") -> torch.Tensor:
        if sample.dim() != 5:
            raise ValueError(f"sample must be (batch, channels, frames, h, w), got shape {tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        up_factor = 2**self.num_upsamplers
        forward_upsample_size = h % up_factor != 0 or w % up_factor != 0
        if self._config["center_input_sample"]:
            sample = 2 * sample - 1.0

        t_emb = self.time_proj(self._timesteps(timestep, b, sample.device)).to(self.dtype)
        emb = self.time_embedding(t_emb)
        ctx = self._audio_context(encoder_hidden_states, b, f, sample.dtype)

        hidden_states = self.conv_in(sample)
        skips = [hidden_states]
        target = self.deep_cache_target(deep_cache.branch) if deep_cache is not None else None

        if deep_cache is not None and deep_cache.reuse:
            cached = deep_cache.cached
            if cached.shape[0] != b or cached.shape[2] != f:
                raise ValueError(f"DeepCache holds a tensor for batch {cached.shape[0]} / {cached.shape[2]} frames "
                                 f"but this call has batch {b} / {f} frames; use one DeepCache per window run")
            needed = deep_cache.branch + 1
            for block in self.down_blocks:
                if len(skips) >= needed:
                    break
                hidden_states, res = block(hidden_states, emb, ctx, max_outputs=needed - len(skips))
                skips.extend(res)
            hidden_states = self._up_path(cached, skips, emb, ctx, forward_upsample_size, start=target)
        else:
            for block in self.down_blocks:
                hidden_states, res = block(hidden_states, emb, ctx)
                skips.extend(res)
            hidden_states = self.mid_block(hidden_states, emb, ctx)
            hidden_states = self._up_path(hidden_states, skips, emb, ctx, forward_upsample_size,
                                          capture=target, deep_cache=deep_cache)

        return self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
