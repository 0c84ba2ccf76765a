"""LoRA files of the U-Net (written by `training.train_unet` with `lora.rank > 0`) and their application.

A LoRA file is a `.safetensors` file holding, for every adapted linear projection `M` (`...attn1.to_q`, a motion
module's `...to_out.0`, ...), `M.lora_A.weight` (rank x in) and `M.lora_B.weight` (out x rank), the key names peft's
`get_peft_model_state_dict` gives, plus metadata: `format` = `latentsync-lora`, `rank`, `alpha`, `target_modules`.

It is applied by merging `strength * alpha / rank * B @ A` into `M.weight` of the U-Net's state dict before the
weights are loaded, in float32. That works for any layer class that stores its weight under `M.weight` (plain
`nn.Linear`, ComfyUI's `comfy.ops` layers, a meta-device model filled with `load_state_dict(assign=True)`) and costs
nothing at sampling time. Strength 0 leaves the state dict untouched: exactly the base U-Net.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "latentsync-lora"
A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


class LoRAError(ValueError):
    """A LoRA file is unreadable or does not fit the U-Net it is applied to; the message says which file and key."""


@dataclass(frozen=True)
class LoRA:
    """The low-rank factors of one file: module name -> (A, B), and the scale alpha / rank."""

    path: Path
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    alpha: float
    target_modules: list[str]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def num_parameters(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.factors.values())


def save_lora(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], rank: int, alpha: float,
              target_modules: Sequence[str], global_step: int | None = None,
              dtype: torch.dtype | None = None) -> Path:
    """Write the `lora_A` / `lora_B` tensors of `state_dict` (peft's adapter state dict) as a LoRA file, atomically.
    `dtype` casts them (None: as they are)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in state_dict.items()
               if k.endswith((A_SUFFIX, B_SUFFIX))}
    modules = {k[: -len(A_SUFFIX)] for k in tensors if k.endswith(A_SUFFIX)}
    if not modules or modules != {k[: -len(B_SUFFIX)] for k in tensors if k.endswith(B_SUFFIX)}:
        raise LoRAError(f"not a complete LoRA state dict ({len(tensors)} lora_A / lora_B tensors)")
    metadata = {"format": FORMAT, "rank": str(int(rank)), "alpha": repr(float(alpha)),
                "target_modules": json.dumps(list(target_modules))}
    if global_step is not None:
        metadata["global_step"] = str(int(global_step))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_lora(path: str | os.PathLike) -> LoRA:
    """Read a LoRA file on the CPU (safetensors only: no code can run while reading it)."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        raise LoRAError(f"{path}: a LatentSync LoRA is a .safetensors file (written by training.train_unet with "
                        f"lora.rank > 0)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise LoRAError(f"{path} is not a readable .safetensors file: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise LoRAError(f"{path} is not a LatentSync LoRA (metadata format={metadata.get('format')!r}, expected "
                        f"{FORMAT!r}); LoRAs of other models (Stable Diffusion, ...) do not apply to this U-Net")
    factors = {}
    for key, a in tensors.items():
        if not key.endswith(A_SUFFIX):
            continue
        module = key[: -len(A_SUFFIX)]
        b = tensors.get(module + B_SUFFIX)
        if b is None or a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise LoRAError(f"{path}: {module} has no matching lora_A {tuple(a.shape)} / lora_B "
                            f"{None if b is None else tuple(b.shape)} pair")
        factors[module] = (a, b)
    if not factors:
        raise LoRAError(f"{path} holds no lora_A / lora_B tensors")
    return LoRA(path=path, factors=factors, rank=int(metadata["rank"]), alpha=float(metadata["alpha"]),
                target_modules=json.loads(metadata.get("target_modules", "[]")))


def merge_lora(state_dict: dict[str, torch.Tensor], lora: LoRA, strength: float = 1.0) -> int:
    """Add `strength * scale * B @ A` to every adapted weight of `state_dict` in place (computed in float32, stored
    in the weight's dtype). Returns the number of weights changed (0 for strength 0: the state dict is untouched)."""
    problems = []
    for module, (a, b) in lora.factors.items():
        weight = state_dict.get(module + ".weight")
        if weight is None:
            problems.append(f"{module}.weight is not in the U-Net")
        elif tuple(weight.shape) != (b.shape[0], a.shape[1]):
            problems.append(f"{module}.weight is {tuple(weight.shape)}, the LoRA expects {(b.shape[0], a.shape[1])}")
    if problems:
        raise LoRAError(f"{lora.path} does not fit this U-Net ({len(problems)} of {len(lora.factors)} modules: "
                        f"{'; '.join(problems[:3])}). It was trained on another U-Net (version 1.5 vs 1.6, or another "
                        f"architecture): apply it to the one it was trained on.")
    if float(strength) == 0.0:
        return 0
    factor = float(strength) * lora.scale
    for module, (a, b) in lora.factors.items():
        key = module + ".weight"
        weight = state_dict[key]
        merged = weight.float() + factor * (b.float() @ a.float()).to(weight.device)
        state_dict[key] = merged.to(weight.dtype)
    return len(lora.factors)


def parse_lora_spec(spec: str) -> tuple[Path, float]:
    """`FILE[:STRENGTH]` (strength 1 by default). A suffix that is not a number belongs to the path."""
    path, sep, tail = str(spec).rpartition(":")
    if sep:
        try:
            return Path(path).expanduser(), float(tail)
        except ValueError:
            pass
    return Path(spec).expanduser(), 1.0


def apply_loras(state_dict: dict[str, torch.Tensor], loras: Sequence[tuple[str | os.PathLike, float]]) -> None:
    """Merge each `(file, strength)` into `state_dict`, in order."""
    for path, strength in loras:
        merge_lora(state_dict, load_lora(path), strength)
