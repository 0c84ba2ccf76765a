"""The tiny model set's VAE file: two small random VAEs of SD's latent space in ONE safetensors file, saved under the
official name ``vae/vae-ft-mse-840000-ema-pruned.safetensors`` so that the shipped workflows run on the tiny set
unchanged.

Why two: ComfyUI 0.3.75's Load VAE builds the SD VAE with hard-coded widths (ch 128, ch_mult 1-2-4-4, 2 blocks per
level: ``comfy/sd.py``), whatever the file holds, so a narrow SD VAE does not load there; a full-width one costs
about 3 s per 256 px frame on a 2-core CPU. What ComfyUI does load at any size is a file with TAESD keys
(``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``, ``vae_shift``: checked before the SD keys), a ~2.4 M
parameter autoencoder of the same 4-channel latent space. Our own loader (`latentsync.vae.load_vae`, the command
line) reads the SD-VAE keys of the same file (LDM names, as the real file has them; widths read from the shapes),
a narrow AutoencoderKL (8 channels per level, 8 norm groups: the group count, which the shapes do not give, is in
the file's safetensors metadata as ``norm_num_groups``) that is ~19x cheaper than TAESD on the CPU. So:

    taesd_encoder.* / taesd_decoder.* / vae_scale / vae_shift     what ComfyUI's Load VAE uses
    encoder.* / decoder.* / quant_conv.* / post_quant_conv.*        what latentsync.vae.load_vae uses

Both are random; each loader ignores the other's keys (ComfyUI loads non-strictly and logs the rest at debug level).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..vae import NORM_GROUPS_METADATA

SD15_SCALING = 0.18215


def ldm_vae_state_dict(diffusers_state: dict[str, torch.Tensor], num_up_blocks: int) -> dict[str, torch.Tensor]:
    """A diffusers `AutoencoderKL` state dict under the original LDM key names (what ``vae-ft-mse-840000-ema-pruned``
    uses and what ComfyUI and `diffusers.loaders.single_file_utils.convert_ldm_vae_checkpoint` read)."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in diffusers_state.items():
        new = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        # diffusers numbers the decoder's levels from the bottom, LDM from the top
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{num_up_blocks - 1 - int(m.group(1))}.block.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{num_up_blocks - 1 - int(m.group(1))}.upsample.", new)
        new = re.sub(r"\.mid_block\.resnets\.(\d)\.", lambda m: f".mid.block_{int(m.group(1)) + 1}.", new)
        match = re.match(r"^(.*)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", new)
        if match:
            new = f"{match.group(1)}.mid.attn_1.{attention[match.group(2)]}.{match.group(3)}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out[new] = value.contiguous()
    return out


def taesd_state_dict(taesd) -> dict[str, torch.Tensor]:
    """A diffusers `AutoencoderTiny` under the key names ComfyUI's TAESD loader reads (madebyollin/taesd layout: the
    decoder's index 0 is its clamp, so diffusers' decoder layer i is TAESD's i + 1), with SD-1.5's latent scale."""
    out = {}
    for key, value in taesd.state_dict().items():
        part, _, index, rest = key.split(".", 3)  # "encoder", "layers", "3", "conv.0.weight"
        shift = 1 if part == "decoder" else 0
        out[f"taesd_{part}.{int(index) + shift}.{rest}"] = value.contiguous()
    out["vae_scale"] = torch.tensor(SD15_SCALING)
    out["vae_shift"] = torch.tensor(0.0)
    return out


def save_tiny_vae_file(path: Path, sd_vae, taesd) -> Path:
    """Write both VAEs (diffusers `AutoencoderKL` and `AutoencoderTiny`) into one safetensors file at ``path``."""
    state = ldm_vae_state_dict(sd_vae.state_dict(), len(sd_vae.config.up_block_types))
    tiny = taesd_state_dict(taesd)
    clash = set(state) & set(tiny)
    if clash:
        raise ValueError(f"key clash between the two VAEs: {sorted(clash)[:5]}")
    metadata = {"format": "pt", NORM_GROUPS_METADATA: str(sd_vae.config.norm_num_groups)}
    save_file({**state, **tiny}, str(path), metadata=metadata)
    return path
