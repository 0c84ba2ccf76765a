"""The SD VAE (sd-vae-ft-mse) used by LatentSync: loading and a batched encode/decode codec.

Latents handed to the U-Net are scaled: ``z * 0.18215`` (shift 0). The official pipeline encodes with a posterior
*sample* (not the mean), which `VAECodec` reproduces with an explicit `torch.Generator`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from diffusers import AutoencoderKL

SCALING_FACTOR = 0.18215
SD15_VAE_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "vae_sd15.json"
CPU_BATCH_SIZE = 4
MAX_BATCH_SIZE = 16

_DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_LDM_PREFIXES = ("first_stage_model.", "vae.")
NORM_GROUPS_METADATA = "norm_num_groups"  # safetensors metadata key: the group count, which shapes do not give


class VAELoadError(ValueError):
    """A VAE file or folder exists but cannot be turned into an `AutoencoderKL`."""


def sd15_vae_config() -> dict[str, Any]:
    """The diffusers config of the SD-1.x VAE (what `stabilityai/sd-vae-ft-mse` ships), read from our own JSON."""
    with open(SD15_VAE_CONFIG_PATH, encoding="utf-8") as f:
        config = json.load(f)
    config.pop("_class_name", None)
    return config


def load_vae(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: dict[str, Any] | None = None,
) -> AutoencoderKL:
    """Load an `AutoencoderKL` from a diffusers folder or a single checkpoint file, fully offline.

    - folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``);
    - single file (``.safetensors``/``.pt``/``.ckpt``): LDM key names (e.g. ``vae-ft-mse-840000-ema-pruned``, also a
      whole SD checkpoint with ``first_stage_model.`` keys) or diffusers key names. The architecture is the SD-1.5
      VAE config with widths/depth/channels read from the tensor shapes and the norm group count from the
      safetensors metadata key ``norm_num_groups`` when the file has it, else 32 (``config`` overrides it). Keys
      of other networks in the same file are ignored (the tiny model set's file also holds a TAESD for ComfyUI's
      Load VAE); a file with only TAESD keys is refused with a clear message.
    The model is returned in eval mode on ``device`` with ``dtype``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"VAE not found: {path} (expected a diffusers folder or a .safetensors/.ckpt file)")
    if path.is_dir():
        vae = _load_diffusers_folder(path, dtype).to(device=device)  # already in dtype
    elif path.suffix.lower() in _SINGLE_FILE_SUFFIXES:
        # nn.Module.to: diffusers' override warns about keep-in-fp32 modules, which AutoencoderKL does not have.
        vae = torch.nn.Module.to(_load_single_file(path, config), device=device, dtype=dtype)
    else:
        raise VAELoadError(f"unsupported VAE file type {path.suffix!r}: {path} (use .safetensors, .pt, .ckpt or a folder)")
    return vae.eval().requires_grad_(False)


def _load_diffusers_folder(folder: Path, dtype: torch.dtype) -> AutoencoderKL:
    if not (folder / "config.json").is_file():
        raise VAELoadError(f"VAE folder {folder} has no config.json (expected a diffusers AutoencoderKL folder)")
    if not any((folder / name).is_file() for name in _DIFFUSERS_WEIGHT_NAMES):
        raise VAELoadError(
            f"VAE folder {folder} has no weights: expected one of {', '.join(_DIFFUSERS_WEIGHT_NAMES)}"
        )
    # local path + local_files_only: diffusers never touches the network here.
    return AutoencoderKL.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file: say which file and why
        raise VAELoadError(f"cannot read VAE checkpoint {path} safely (weights_only=True): {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VAELoadError(f"VAE checkpoint {path} is not a state dict of tensors")
    return obj


def _strip_vae_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _LDM_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _is_ldm_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("encoder.down.") for k in state)


def infer_vae_config(state: dict[str, torch.Tensor], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """SD-1.5 VAE config with block widths, depth and channel counts read from a state dict (LDM or diffusers keys).

    ``norm_num_groups`` cannot be read from shapes; it stays at the base value (32; a single file may state it in its
    metadata, see `load_vae`).
    """
    config = copy.deepcopy(base) if base is not None else sd15_vae_config()
    ldm = _is_ldm_layout(state)
    block = "encoder.down.{}.block.{}.conv1.weight" if ldm else "encoder.down_blocks.{}.resnets.{}.conv1.weight"
    widths = []
    while block.format(len(widths), 0) in state:
        widths.append(int(state[block.format(len(widths), 0)].shape[0]))
    if not widths:
        if any(k.startswith("taesd_encoder.") for k in state):
            raise VAELoadError("this file holds a TAESD (tiny autoencoder), not the SD VAE: ComfyUI's Load VAE reads "
                               "it, LatentSync needs the SD VAE (vae-ft-mse-840000-ema-pruned.safetensors)")
        raise VAELoadError("state dict has no encoder blocks: this is not an AutoencoderKL/LDM VAE checkpoint")
    layers = 0
    while block.format(0, layers) in state:
        layers += 1
    config["block_out_channels"] = widths
    config["layers_per_block"] = layers
    config["down_block_types"] = ["DownEncoderBlock2D"] * len(widths)
    config["up_block_types"] = ["UpDecoderBlock2D"] * len(widths)
    config["in_channels"] = int(state["encoder.conv_in.weight"].shape[1])
    config["out_channels"] = int(state["decoder.conv_out.weight"].shape[0])
    config["latent_channels"] = int(state["quant_conv.weight"].shape[0]) // 2
    return config


def _norm_groups_in_metadata(path: Path) -> int | None:
    """The norm group count a safetensors file states in its metadata (the tiny model set's VAE does), else None."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        value = (f.metadata() or {}).get(NORM_GROUPS_METADATA)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise VAELoadError(
            f"VAE file {path}: metadata {NORM_GROUPS_METADATA}={value!r} is not a whole number") from None


def _load_single_file(path: Path, config: dict[str, Any] | None) -> AutoencoderKL:
    state = _strip_vae_prefix(_read_state_dict(path))
    if config is None:
        config = infer_vae_config(state)
        groups = _norm_groups_in_metadata(path)
        if groups is not None:
            config["norm_num_groups"] = groups
    vae = AutoencoderKL(**{k: v for k, v in config.items() if not k.startswith("_")})
    if _is_ldm_layout(state):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, config)
    target = vae.state_dict()
    converted = {}
    for key, value in state.items():
        if key in target and value.shape != target[key].shape and value.numel() == target[key].numel():
            value = value.reshape(target[key].shape)  # LDM 1x1-conv attention weights -> linear
        converted[key] = value
    missing = sorted(set(target) - set(converted))
    unexpected = sorted(set(converted) - set(target))
    if missing or unexpected:
        raise VAELoadError(
            f"VAE checkpoint {path} does not match the AutoencoderKL architecture: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    try:
        vae.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise VAELoadError(f"VAE checkpoint {path} has tensors of the wrong shape: {exc}") from exc
    return vae


def auto_batch_size(vae: AutoencoderKL, resolution: int, device: torch.device) -> int:
    """Images per VAE call that fit the free memory of ``device``.

    CUDA: free memory / a per-image estimate (peak activations at full resolution: widest full-res block width
    x R^2 x element size x 8 live tensors), clamped to [1, 16]. CPU: a fixed moderate size (4).
    """
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    free, _total = torch.cuda.mem_get_info(device)
    widths = list(vae.config.block_out_channels)
    full_res_width = max(widths[:2])
    elem = torch.finfo(vae.dtype).bits // 8
    per_image = resolution * resolution * full_res_width * elem * 8
    return max(1, min(MAX_BATCH_SIZE, int(free * 0.8) // per_image))


class VAECodec:
    """Batched encode/decode with LatentSync's scaling: ``encode(images) -> z * 0.18215``, ``decode`` the inverse.

    ``sample=True`` draws a posterior sample (official behaviour) using ``generator``; each image gets its own noise
    drawn in order, so results do not depend on the batch size. Without a generator, a private generator seeded
    with 0 is used (never the global RNG). Outputs are in the VAE's dtype, on its device.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        generator: torch.Generator | None = None,
        sample: bool = True,
        batch_size: int | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (automatic), got {batch_size}")
        self.vae = vae
        self.sample = sample
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    def _batches(self, x: torch.Tensor, resolution: int) -> Iterator[torch.Tensor]:
        size = self.batch_size or auto_batch_size(self.vae, resolution, self.device)
        for start in range(0, x.shape[0], size):
            yield x[start : start + size]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``images (N, 3, R, R)`` in [-1, 1] -> scaled latents ``(N, 4, R/8, R/8)``."""
        if images.ndim != 4 or images.shape[1] != self.vae.config.in_channels:
            raise ValueError(f"encode expects (N, {self.vae.config.in_channels}, R, R) images, got {tuple(images.shape)}")
        out = []
        for chunk in self._batches(images, images.shape[-1]):
            dist = self.vae.encode(chunk.to(self.device, self.dtype)).latent_dist
            if self.sample:
                noise = torch.stack(
                    [
                        torch.randn(dist.mean.shape[1:], generator=self.generator, device=self.generator.device)
                        for _ in range(chunk.shape[0])
                    ]
                ).to(self.device, self.dtype)
                z = dist.mean + dist.std * noise
            else:
                z = dist.mean
            out.append(z * SCALING_FACTOR)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled ``latents (N, 4, h, w)`` -> images ``(N, 3, 8h, 8w)``, nominally [-1, 1], not clamped."""
        if latents.ndim != 4 or latents.shape[1] != self.vae.config.latent_channels:
            raise ValueError(
                f"decode expects (N, {self.vae.config.latent_channels}, h, w) latents, got {tuple(latents.shape)}"
            )
        out = []
        for chunk in self._batches(latents, latents.shape[-1] * 8):
            out.append(self.vae.decode(chunk.to(self.device, self.dtype) / SCALING_FACTOR).sample)
        return torch.cat(out)
