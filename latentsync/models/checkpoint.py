"""Loading and saving U-Net checkpoints safely (official `latentsync_unet.pt`, bare state dicts, safetensors)."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Mapping

import torch

from ..state_dict_keys import key_problems, unwrap_state_dict
from .motion_module import sinusoidal_position_table
from .unet_3d import DEFAULT_CONFIG, UNet3DConditionModel, resolve_unet_config

PE_SUFFIX = "pos_encoder.pe"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded into the U-Net (unsafe content, wrong keys or shapes)."""


def load_unet_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a U-Net state dict on the CPU (see `load_state_dict_file`)."""
    return load_state_dict_file(path, "U-Net")


def load_state_dict_file(path: str | os.PathLike, what: str = "U-Net") -> dict[str, torch.Tensor]:
    """Read a model's state dict on the CPU (`what` names the model in errors).

    `.safetensors` files, or torch pickles loaded with `weights_only=True` holding either `{"state_dict": ...,
    "global_step": ...}` (official training format) or a bare `{name: tensor}` dict. Zip-format pickles are
    memory-mapped, so the file is not held twice in RAM.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refusing to load {path}: it contains Python objects other than tensors and plain containers, which "
            f"could run arbitrary code (torch.load weights_only=True rejected it: {first_line}). Use the official "
            f"file or re-save the weights as a plain state dict / .safetensors."
        ) from exc
    return unwrap_state_dict(obj, path, CheckpointError)  # also strips a DDP "module." prefix


def infer_unet_config(state_dict: Mapping[str, torch.Tensor], base: Mapping[str, Any] | None = None) -> dict:
    """Config read from the key set and shapes (widths, in/out channels, audio dim, motion-module placement).

    Head counts and GroupNorm groups cannot be seen in the shapes; they come from `base` (default: the stage-2
    config, 8 heads, 32 groups).
    """
    sd = state_dict
    widths = []
    while f"down_blocks.{len(widths)}.resnets.0.conv1.weight" in sd:
        widths.append(int(sd[f"down_blocks.{len(widths)}.resnets.0.conv1.weight"].shape[0]))
    if not widths or "conv_in.weight" not in sd or "conv_out.weight" not in sd:
        raise CheckpointError("not a LatentSync U-Net state dict: conv_in / conv_out / "
                              "down_blocks.*.resnets.0.conv1.weight not found")
    n = len(widths)
    cfg = resolve_unet_config(dict(base or {}))
    layers = len({m.group(1) for k in sd if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))})
    cfg.update(block_out_channels=widths, layers_per_block=layers,
               in_channels=int(sd["conv_in.weight"].shape[1]), out_channels=int(sd["conv_out.weight"].shape[0]))
    audio_keys = [k for k in sd if k.endswith("attn2.to_k.weight")]
    cfg["add_audio_layer"] = bool(audio_keys)
    if audio_keys:
        cfg["cross_attention_dim"] = int(sd[audio_keys[0]].shape[1])

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in sd)

    cfg["down_block_types"] = ["CrossAttnDownBlock3D" if has(f"down_blocks.{i}.attentions.") else "DownBlock3D"
                               for i in range(n)]
    cfg["up_block_types"] = ["CrossAttnUpBlock3D" if has(f"up_blocks.{i}.attentions.") else "UpBlock3D"
                             for i in range(n)]
    down_mm = [i for i in range(n) if has(f"down_blocks.{i}.motion_modules.")]
    up_mm = [i for i in range(n) if has(f"up_blocks.{i}.motion_modules.")]
    mid_mm = has("mid_block.motion_modules.")
    cfg["use_motion_module"] = bool(down_mm or up_mm or mid_mm)
    if cfg["use_motion_module"]:
        cfg["motion_module_decoder_only"] = bool(up_mm) and not down_mm
        cfg["motion_module_mid_block"] = mid_mm
        cfg["motion_module_resolutions"] = sorted({2**i for i in down_mm} | {2 ** (n - 1 - i) for i in up_mm})
        first = next(k for k in sd if ".motion_modules." in k).split(".temporal_transformer.")[0]
        blocks = {m.group(1) for k in sd
                  if (m := re.match(re.escape(first) + r"\.temporal_transformer\.transformer_blocks\.(\d+)\.", k))}
        attn = {m.group(1) for k in sd if (m := re.match(
            re.escape(first) + r"\.temporal_transformer\.transformer_blocks\.0\.attention_blocks\.(\d+)\.", k))}
        mm = dict(cfg["motion_module_kwargs"])
        mm["num_transformer_block"] = len(blocks)
        mm["attention_block_types"] = ["Temporal_Self"] * len(attn)
        pe = [k for k in sd if k.endswith(PE_SUFFIX)]
        if pe:
            mm["temporal_position_encoding"] = True
            mm["temporal_position_encoding_max_len"] = int(sd[pe[0]].shape[1])
        cfg["motion_module_kwargs"] = mm
    else:
        cfg["motion_module_decoder_only"] = DEFAULT_CONFIG["motion_module_decoder_only"]
    return cfg


def load_state_dict_into_unet(unet: UNet3DConditionModel, state_dict: dict[str, torch.Tensor],
                              device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
    """Strict load that replaces the module's tensors (works on a meta-device model, no second copy).

    Missing `pos_encoder.pe` buffers are recomputed; any other missing, unexpected or shape-mismatched key raises
    `CheckpointError` naming the keys. Floating tensors are cast to `dtype`, all moved to `device`, one at a time.
    `state_dict` is consumed (its entries are replaced).
    """
    expected = unet.state_dict()
    missing_pe = [k for k in expected if k not in state_dict and k.endswith(PE_SUFFIX)]
    problems = key_problems(expected, state_dict, optional_suffixes=(PE_SUFFIX,))
    if problems:
        raise CheckpointError("checkpoint does not fit the U-Net config: " + "; ".join(problems)
                              + ". Check that the config (stage1 / stage2 / stage2_512) matches the file.")
    for key in missing_pe:
        _, max_len, channels = expected[key].shape
        state_dict[key] = sinusoidal_position_table(channels, max_len)
    if device is None:
        device = "cpu" if unet.device.type == "meta" else unet.device
    for key in list(state_dict):
        value = state_dict[key]
        target_dtype = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
        if value.is_floating_point() and dtype is None:
            target_dtype = expected[key].dtype if expected[key].dtype.is_floating_point else value.dtype
        state_dict[key] = value.to(device=device, dtype=target_dtype)
    unet.load_state_dict(state_dict, strict=True, assign=True)


def load_unet(path: str | os.PathLike, config: Mapping[str, Any] | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              loras: Sequence[tuple[str | os.PathLike, float]] = (), ops: Any = None) -> UNet3DConditionModel:
    """Build the U-Net (on the meta device, no allocation) and load `path` into it in `dtype` on `device`.

    Without `config` the architecture is read from the checkpoint (`infer_unet_config`). `loras`: LoRA files with
    their strengths, merged into the weights before loading (`latentsync.models.lora`). `ops`: the layer classes
    to build from (see `latentsync.models.layers`). Returns an eval model.
    """
    state_dict = load_unet_state_dict(path)
    if loras:
        from .lora import apply_loras

        apply_loras(state_dict, loras)
    cfg = dict(config) if config is not None else infer_unet_config(state_dict)
    with torch.device("meta"):
        unet = UNet3DConditionModel(ops=ops, **cfg)
    try:
        load_state_dict_into_unet(unet, state_dict, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return unet.eval()


def save_unet_checkpoint(unet: UNet3DConditionModel | Mapping[str, torch.Tensor], path: str | os.PathLike,
                         global_step: int | None = None) -> Path:
    """Write `{"state_dict": ..., "global_step": ...}` (official format) or, for `.safetensors`, a flat file.

    Written to a temporary file first and renamed, so an interrupted save never leaves a truncated checkpoint.
    """
    path = Path(path)
    source = unet.state_dict() if isinstance(unet, torch.nn.Module) else unet
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in source.items()}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"format": "pt"}
        if global_step is not None:
            metadata["global_step"] = str(int(global_step))
        save_file(state_dict, str(tmp), metadata=metadata)
    else:
        payload: dict[str, Any] = {"state_dict": state_dict}
        if global_step is not None:
            payload["global_step"] = int(global_step)
        torch.save(payload, tmp)
    os.replace(tmp, path)
    return path
