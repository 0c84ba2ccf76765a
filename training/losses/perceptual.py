"""LPIPS with the `lpips` package, its backbone read from a local file (never downloaded by torchvision)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch


def build_lpips(net: str = "vgg", backbone_path: str | Path | None = None, random_backbone: bool = False):
    """Frozen `lpips.LPIPS(net)` with the package's own calibrated linear heads.

    The ImageNet backbone comes from `backbone_path` (torchvision's `vgg16-397923af.pth` for "vgg"); with
    `random_backbone` it stays randomly initialised (smoke tests only: the loss then measures nothing real).
    """
    import lpips

    if not random_backbone and backbone_path is None:
        raise ValueError("LPIPS needs its backbone weights file (lpips.backbone) or lpips.random_backbone=true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecated `pretrained` argument
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if not random_backbone:
        state = torch.load(backbone_path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        own = dict(model.net.named_parameters())
        mapped = {}
        for name in own:  # lpips splits torchvision's `features` into slice1..5 keeping the layer indices
            index_and_param = name.split(".", 1)[1]
            if index_and_param not in features:
                raise ValueError(f"{backbone_path} is not a torchvision {net} checkpoint (no features.{index_and_param})")
            mapped[name] = features[index_and_param]
        model.net.load_state_dict(mapped, strict=True)
    return model.eval().requires_grad_(False)


class PerceptualLoss:
    """`(fake, real)` images `(N, 3, H, W)` in [-1, 1] -> mean LPIPS, always in fp32 with autocast off, as the
    official loss (`lpips(pred.float(), gt.float())` on an fp32 network): in fp16/bf16 LPIPS' normalisation
    `x / (|x| + 1e-10)` loses its epsilon (0/0 = NaN on an all-zero feature) and large activations overflow."""

    def __init__(self, model):
        self.model = model.float()

    def __call__(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=fake.device.type, enabled=False):
            return self.model(fake.float(), real.float()).mean()
