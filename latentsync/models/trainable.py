"""Which U-Net parameters a training stage updates (official rule of `scripts/train_unet.py`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

# Official subsets: stage 2 trains every spatial transformer and the motion modules; stage2_efficient only the
# motion modules and the audio cross-attention.
STAGE2_TRAINABLE = ("motion_modules.", "attentions.")
STAGE2_EFFICIENT_TRAINABLE = ("motion_modules.", "attn2.")


def is_trainable(name: str, trainable_modules: Sequence[str] | None) -> bool:
    """A parameter is trained iff any string of `trainable_modules` is a substring of its name; None = all."""
    return trainable_modules is None or any(m in name for m in trainable_modules)


def trainable_names(names: Iterable[str], trainable_modules: Sequence[str] | None) -> list[str]:
    return [n for n in names if is_trainable(n, trainable_modules)]


def set_trainable(model: nn.Module, trainable_modules: Sequence[str] | None) -> list[str]:
    """`requires_grad` on exactly the selected parameters (all when None); returns their names."""
    chosen = []
    for name, param in model.named_parameters():
        flag = is_trainable(name, trainable_modules)
        param.requires_grad_(flag)
        if flag:
            chosen.append(name)
    return chosen
